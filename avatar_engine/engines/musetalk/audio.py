"""Speech -> whisper-tiny encoder features -> one 50x384 window per video frame, as upstream's AudioProcessor.

* The 16 kHz wave is cut into 30 s segments; each goes through transformers' `WhisperFeatureExtractor`
  (zero-padded to 30 s before the STFT) and the encoder on the full 3000 mel frames (attention sees the
  padded silence too). All 5 hidden states (embedding, layers 0-2, the final layer norm) are stacked per
  encoder frame, segments concatenated and trimmed to floor(seconds * 50) frames.
* Windows: fps is truncated to an int; the features are padded with zeros (in feature space) by
  ceil(50/fps) * 2 frames in front and ceil(50/fps) * 6 behind; frame i takes the 10 encoder frames from
  floor(i * 50/fps) of the padded sequence, flattened time-major (token = 5 * t + layer) to (50, 384).
* One deliberate difference: upstream aborts (assert + exit) when the last windows run past its right
  padding (fps 50, 60); here the padding behind grows until every frame's window fits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLE_RATE = 16000
SEGMENT_SAMPLES = 30 * SAMPLE_RATE  # whisper's 30 s input
ENCODER_FPS = 50  # encoder frames per second of audio
PAD_LEFT, PAD_RIGHT = 2, 2  # upstream's audio_padding_length_left / _right (in video frames)
WINDOW = 2 * (PAD_LEFT + PAD_RIGHT + 1)  # encoder frames per video frame's window


def input_features(wav: np.ndarray, extractor) -> list[torch.Tensor]:
    """[1, 80, 3000] log-mel features of each 30 s segment of a float32 16 kHz wave."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    segments = [wav[i:i + SEGMENT_SAMPLES] for i in range(0, max(len(wav), 1), SEGMENT_SAMPLES)]
    return [extractor(seg, return_tensors="pt", sampling_rate=SAMPLE_RATE).input_features for seg in segments]


def encoder_states(encoder, features: list[torch.Tensor], n_samples: int) -> torch.Tensor:
    """[1, T, 5, 384] hidden states of every segment, concatenated and trimmed to floor(seconds * 50)."""
    param = next(encoder.parameters())
    states = []
    with torch.inference_mode():
        for feat in features:
            out = encoder(feat.to(param.device, param.dtype), output_hidden_states=True)
            states.append(torch.stack(out.hidden_states, dim=2))
    actual = int(n_samples / SAMPLE_RATE * ENCODER_FPS)
    return torch.cat(states, dim=1)[:, :actual]


def frame_count(n_samples: int, fps: float) -> int:
    """Video frames upstream renders for the audio: floor(seconds * int(fps))."""
    return int(n_samples / SAMPLE_RATE * int(fps))


def window_sources(n_states: int, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames, 10) encoder-frame index per window block; -1 where the window reads zero padding."""
    fps = int(fps)
    if fps <= 0:
        raise ValueError(f"fps must be at least 1, got {fps}")
    step = ENCODER_FPS / fps
    pad = math.ceil(step)
    left = pad * PAD_LEFT
    starts = np.array([math.floor(i * step) for i in range(n_frames)], dtype=np.int64)
    src = starts[:, None] + np.arange(WINDOW)[None, :] - left
    return np.where((src >= 0) & (src < n_states), src, -1)


def frame_windows(states: torch.Tensor, n_frames: int, fps: float) -> torch.Tensor:
    """[n_frames, 50, 384] windows from [1, T, 5, C] states (zeros where a window leaves the audio)."""
    _, n_states, layers, channels = states.shape
    src = torch.from_numpy(window_sources(n_states, n_frames, fps))
    padded = torch.cat([states[0], states.new_zeros(1, layers, channels)])  # row n_states: the zero block
    picked = padded[torch.where(src < 0, n_states, src)]  # [n_frames, 10, 5, C]
    return picked.reshape(n_frames, WINDOW * layers, channels)


def speech_windows(wav: np.ndarray, encoder, extractor, fps: float, n_frames: int | None = None) -> torch.Tensor:
    """The whole audio path: a 16 kHz wave -> [n_frames, 50, 384] windows (default: upstream's frame count)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    states = encoder_states(encoder, input_features(wav, extractor), len(wav))
    frames = frame_count(len(wav), fps) if n_frames is None else n_frames
    return frame_windows(states, frames, fps)
