"""Wav2Lip generator (Prajwal et al., ACM MM 2020) and its audio front end, written from the paper's
architecture description; the state_dict layout equals the official `wav2lip.pth` / `wav2lip_gan.pth`.

The network takes a 96x96 BGR face whose lower half is blanked, stacked with an unmasked reference
of the same face (6 channels, values in [0, 1]), plus an 80x16 mel window (200 ms of audio), and
paints the lower half so the mouth matches the audio. It returns BGR in [0, 1].
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import extract_state_dict, load_strict, read_checkpoint

# Audio front end constants of the official checkpoints (upstream `hparams.py`).
SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP  # 80.0
MEL_WINDOW = 16  # mel frames per video frame fed to the network (200 ms)
FACE_SIZE = 96


class ConvBNReLU(nn.Module):
    """Conv (with bias) -> BatchNorm -> [+ input] -> ReLU; keys `conv_block.0` / `conv_block.1`."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


class ConvTransposeBNReLU(nn.Module):
    """Transposed conv (with bias) -> BatchNorm -> ReLU; the decoder's upsampling step."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, output_padding=0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv_block(x))


def _down(cin: int, cout: int, n_res: int, stride=2) -> nn.Sequential:
    """A stride-2 (or given stride) 3x3 block followed by `n_res` residual 3x3 blocks."""
    layers = [ConvBNReLU(cin, cout, 3, stride, 1)]
    layers += [ConvBNReLU(cout, cout, 3, 1, 1, residual=True) for _ in range(n_res)]
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, n_res: int) -> nn.Sequential:
    """A x2 transposed-conv upsampling followed by `n_res` residual 3x3 blocks."""
    layers: list[nn.Module] = [ConvTransposeBNReLU(cin, cout, 3, 2, 1, output_padding=1)]
    layers += [ConvBNReLU(cout, cout, 3, 1, 1, residual=True) for _ in range(n_res)]
    return nn.Sequential(*layers)


def mel_encoder() -> nn.Sequential:
    """(N, 1, 80 mel, 16 t) -> (N, 512, 1, 1). A flat Sequential because checkpoints index it 0..12;
    SadTalker's audio encoders are this same network (their keys match)."""
    return nn.Sequential(
        *_down(1, 32, 2, stride=1),
        *_down(32, 64, 2, stride=(3, 1)),
        *_down(64, 128, 2, stride=3),
        *_down(128, 256, 1, stride=(3, 2)),
        ConvBNReLU(256, 512, 3, 1, 0),
        ConvBNReLU(512, 512, 1, 1, 0),
    )


class Wav2Lip(nn.Module):
    """The 96x96 Wav2Lip generator (36.3 M parameters)."""

    def __init__(self):
        super().__init__()
        # Each stage's output is kept as a U-Net skip for the decoder (96, 48, 24, 12, 6, 3, 1 px).
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBNReLU(6, 16, 7, 1, 3)),
                _down(16, 32, 2),
                _down(32, 64, 3),
                _down(64, 128, 2),
                _down(128, 256, 2),
                _down(256, 512, 1),
                nn.Sequential(ConvBNReLU(512, 512, 3, 1, 0), ConvBNReLU(512, 512, 1, 1, 0)),
            ]
        )
        self.audio_encoder = mel_encoder()
        # Input channels count the previous stage's output plus the concatenated skip.
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBNReLU(512, 512, 1, 1, 0)),
                nn.Sequential(
                    ConvTransposeBNReLU(1024, 512, 3, 1, 0),
                    ConvBNReLU(512, 512, 3, 1, 1, residual=True),
                ),
                _up(1024, 512, 2),
                _up(768, 384, 2),
                _up(512, 256, 2),
                _up(320, 128, 2),
                _up(160, 64, 2),
            ]
        )
        self.output_block = nn.Sequential(
            ConvBNReLU(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """(B,1,80,16) mel + (B,6,96,96) faces -> (B,3,96,96) BGR in [0, 1].

        Training-style 5-D input, (B,T,1,80,16) + (B,6,T,96,96) -> (B,3,T,96,96), is flattened
        time-major (flat index t*B + b) exactly as upstream, so audio/face pairs stay aligned.
        """
        batch = audio_sequences.size(0)
        sequence_input = face_sequences.dim() > 4
        if sequence_input:
            steps = face_sequences.size(2)
            audio_sequences = audio_sequences.transpose(0, 1).flatten(0, 1)
            face_sequences = face_sequences.permute(2, 0, 1, 3, 4).flatten(0, 1)

        x = self.audio_encoder(audio_sequences)

        skips = []
        feat = face_sequences
        for block in self.face_encoder_blocks:
            feat = block(feat)
            skips.append(feat)

        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)

        out = self.output_block(x)
        if sequence_input:
            out = out.reshape(steps, batch, *out.shape[1:]).permute(1, 2, 0, 3, 4)
        return out


def load_wav2lip(path: str | os.PathLike) -> Wav2Lip:
    """Build `Wav2Lip` from an official checkpoint (eval mode, CPU, float32).

    Accepts the training layout `{"state_dict", "optimizer", "global_step", "global_epoch"}` or a bare
    state dict, with or without DataParallel `module.` prefixes. Read with `weights_only=True`; any
    unreadable, truncated or mismatching file raises AvatarError("engine_unavailable") naming it.
    """
    raw = read_checkpoint(path)
    state_dict = extract_state_dict(raw, prefer=("state_dict",), strip=("module.",))
    model = Wav2Lip()
    load_strict(model, state_dict, path)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Audio: the exact mel spectrogram the checkpoints were trained on (librosa 0.7 semantics).
# --------------------------------------------------------------------------------------------


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's Auditory-Toolbox mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear_step = 200.0 / 3.0
    log_step = math.log(6.4) / 27.0
    knee_mel = 1000.0 / linear_step
    return np.where(hz >= 1000.0, knee_mel + np.log(np.maximum(hz, 1e-12) / 1000.0) / log_step, hz / linear_step)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear_step = 200.0 / 3.0
    log_step = math.log(6.4) / 27.0
    knee_mel = 1000.0 / linear_step
    return np.where(mel >= knee_mel, 1000.0 * np.exp(log_step * (mel - knee_mel)), mel * linear_step)


def mel_filterbank(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = NUM_MELS, fmin: float = FMIN, fmax: float = FMAX
) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters on the Slaney mel scale, area-normalised (float64)."""
    bin_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_hz = _slaney_mel_to_hz(np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - bin_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]


def melspectrogram(wav: np.ndarray, frames_per_chunk: int = 4096) -> np.ndarray:
    """16 kHz mono waveform -> (80, 1 + len//200) float32 mel in [-4, 4], as the checkpoints expect.

    Pre-emphasis 0.97, periodic-Hann STFT (800/200) with reflect padding, magnitude, Slaney mel,
    dB with a -100 dB floor, symmetric normalisation. Computed in float64 in chunks of frames so a
    five-minute clip needs only tens of MB.
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("melspectrogram needs at least one audio sample")
    emphasized = np.empty_like(x)
    emphasized[0] = x[0]
    emphasized[1:] = x[1:] - PREEMPHASIS * x[:-1]
    padded = np.pad(emphasized, N_FFT // 2, mode="reflect")
    n_frames = 1 + x.size // HOP
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    basis = mel_filterbank()
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    mel = np.empty((NUM_MELS, n_frames), dtype=np.float64)
    for start in range(0, n_frames, frames_per_chunk):
        chunk = frames[start : start + frames_per_chunk] * window
        magnitude = np.abs(np.fft.rfft(chunk, n=N_FFT, axis=1))
        mel[:, start : start + chunk.shape[0]] = basis @ magnitude.T
    floor = 10.0 ** (MIN_LEVEL_DB / 20.0)
    db = 20.0 * np.log10(np.maximum(floor, mel)) - REF_LEVEL_DB
    normalized = 2.0 * MAX_ABS_VALUE * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS_VALUE
    return np.clip(normalized, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_chunk_starts(mel_frames: int, fps: float, n_frames: int | None = None) -> list[int]:
    """Start column of the 16-frame mel window for each video frame.

    Frame i starts at int(i * 80/fps), clamped to the last full window (mel_frames - 16).
    With `n_frames=None` this is upstream's list: it stops at the first clamped frame, which drops
    the last ~3 video frames of the audio. Pass `n_frames = ceil(duration * fps)` to cover the full
    duration; every frame past upstream's cutoff then reuses the last window.
    """
    if mel_frames < MEL_WINDOW:
        raise ValueError(f"need at least {MEL_WINDOW} mel frames (0.2 s of audio), got {mel_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = MEL_FRAMES_PER_SECOND / float(fps)
    last = mel_frames - MEL_WINDOW
    if n_frames is None:
        starts = []
        while (start := int(len(starts) * step)) <= last:
            starts.append(start)
        return starts + [last]
    return [min(int(i * step), last) for i in range(n_frames)]
