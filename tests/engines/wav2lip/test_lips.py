"""The Wav2Lip lip stage: upstream-exact network inputs, streaming, batching and a box-local paste."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from avatar_engine.audio.frames import frame_count_for_samples
from avatar_engine.audio.mel import melspectrogram
from avatar_engine.engines.wav2lip.lips import UPSTREAM_PADS, Wav2LipLipSync
from avatar_engine.engines.wav2lip.nets import Wav2Lip
from avatar_engine.runtime.detweights import fill_module
from tests.support.media import ASSETS
from tests.support.media import FIXTURES as FIXTURE_ROOT

FIXTURES = FIXTURE_ROOT / "wav2lip"


class RecordingModel(nn.Module):
    """Stands in for Wav2Lip: keeps every input batch and paints the face a flat mid grey."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def forward(self, audio, faces):
        self.calls.append((audio.numpy().copy(), faces.numpy().copy()))
        return torch.full((faces.shape[0], 3, 96, 96), 0.5)


@pytest.fixture(scope="module")
def det_model() -> Wav2Lip:
    return fill_module(Wav2Lip())


def synthetic_frames(n: int, height: int = 120, width: int = 100) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = np.zeros((height, width, 3), np.float32)
    base[..., 0] = np.linspace(40, 220, width)[None, :]
    base[..., 1] = np.linspace(30, 200, height)[:, None]
    base[..., 2] = 128
    return [np.clip(base + rng.normal(0, 12, base.shape) + 3 * i, 0, 255).astype(np.uint8) for i in range(n)]


def speech_like_audio(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


BOX = (20, 90, 15, 85)  # y1, y2, x1, x2 before the upstream bottom pad


def test_network_inputs_equal_upstream_recipe_on_golden_image_and_audio():
    """Same face tensor (bit-exact) and mel windows as upstream inference.py built for the golden."""
    golden = np.load(FIXTURES / "golden_forward.npz")
    wav = np.load(FIXTURES / "golden_mel.npz")["wav"]
    frame_rgb = cv2.imread(str(ASSETS / "astronaut_512.png"), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    recorder = RecordingModel()
    stage = Wav2LipLipSync(recorder, batch_size=128, pads=(0, 0, 0, 0))  # upstream --box: no pads
    box = tuple(int(v) for v in golden["face_box_y1y2x1x2"])
    outputs = list(stage.run(itertools.repeat(frame_rgb), box, wav, fps=25.0))

    assert len(outputs) == frame_count_for_samples(wav.size, 25.0, 16000) == 149
    audio = np.concatenate([a for a, _ in recorder.calls])
    faces = np.concatenate([f for _, f in recorder.calls])
    chunk_indices = golden["chunk_indices"]
    np.testing.assert_array_equal(faces[chunk_indices], golden["face_sequences"])
    assert np.abs(audio[chunk_indices] - golden["audio_sequences"]).max() < 1e-4
    # frames past upstream's 145-frame cutoff reuse the last window
    mel = melspectrogram(wav)
    for i in range(145, 149):
        np.testing.assert_array_equal(audio[i, 0], mel[:, -16:])


@pytest.mark.parametrize("n_frames,batch_size", [(5, 2), (4, 2), (3, 16), (1, 1)])
def test_output_count_shape_and_untouched_pixels(det_model, n_frames, batch_size):
    frames = synthetic_frames(n_frames)
    originals = [f.copy() for f in frames]
    stage = Wav2LipLipSync(det_model, batch_size=batch_size)
    outputs = list(stage.run(frames, BOX, speech_like_audio(1.0), fps=25.0, n_frames=n_frames))

    assert len(outputs) == n_frames
    y1, y2, x1, x2 = BOX[0], BOX[1] + UPSTREAM_PADS[1], BOX[2], BOX[3]
    outside = np.ones(frames[0].shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    upper_half_rows = slice(y1, y1 + int(0.48 * (y2 - y1)))
    for out, frame, original in zip(outputs, frames, originals):
        assert out.shape == frame.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(frame, original)  # input not modified in place
        np.testing.assert_array_equal(out[outside], original[outside])
        np.testing.assert_array_equal(out[upper_half_rows], original[upper_half_rows])
        assert np.abs(out.astype(int) - original).max() > 0  # the mouth region was repainted


def test_streams_a_generator_one_batch_at_a_time():
    pulled = []

    def frame_source():
        for i, frame in enumerate(synthetic_frames(10)):
            pulled.append(i)
            yield frame

    stage = Wav2LipLipSync(RecordingModel(), batch_size=4)
    stream = stage.run(frame_source(), BOX, speech_like_audio(0.4), fps=25.0)
    first = next(stream)
    assert len(pulled) == 4 and first.shape == (120, 100, 3)
    rest = list(stream)
    assert len(rest) + 1 == frame_count_for_samples(int(0.4 * 16000), 25.0, 16000) == 10
    assert len(pulled) == 10


def test_default_length_follows_audio_and_never_over_reads():
    source = iter(synthetic_frames(30))
    stage = Wav2LipLipSync(RecordingModel(), batch_size=16)
    outputs = list(stage.run(source, BOX, speech_like_audio(0.5), fps=30.0))
    assert len(outputs) == 15
    assert len(list(source)) == 15  # the frames after the audio's end were left in the iterator


def test_per_frame_boxes_and_short_frame_supply():
    recorder = RecordingModel()
    frames = synthetic_frames(5)
    boxes = [(20 + i, 90 + i, 15, 85) for i in range(5)]
    stage = Wav2LipLipSync(recorder, batch_size=2)
    outputs = list(stage.run(frames, boxes, speech_like_audio(1.0), fps=25.0))
    assert len(outputs) == 5  # the frames ran out before the 25 the audio would need
    for out, frame, (y1, y2, x1, x2) in zip(outputs, frames, boxes):
        changed = np.argwhere((out != frame).any(axis=2))
        assert changed[:, 0].min() >= y1 and changed[:, 0].max() < y2 + 10
        assert changed[:, 1].min() >= x1 and changed[:, 1].max() < x2
    with pytest.raises(ValueError, match="no face box for frame 5"):
        list(stage.run(synthetic_frames(6), boxes, speech_like_audio(1.0), fps=25.0))


def test_very_short_audio_is_padded_with_silence():
    recorder = RecordingModel()
    stage = Wav2LipLipSync(recorder, batch_size=4)
    outputs = list(stage.run(synthetic_frames(3), BOX, speech_like_audio(0.1), fps=25.0))
    assert len(outputs) == 3
    audio = np.concatenate([a for a, _ in recorder.calls])
    assert audio.shape == (3, 1, 80, 16) and (audio[:, :, :, -1] == -4.0).all()


def test_rejects_bad_frames_and_boxes():
    stage = Wav2LipLipSync(RecordingModel())
    with pytest.raises(ValueError, match="RGB uint8"):
        list(stage.run([np.zeros((50, 50), np.uint8)], BOX, speech_like_audio(0.5), fps=25.0))
    with pytest.raises(ValueError, match="empty"):
        list(stage.run(synthetic_frames(1), (200, 300, 0, 50), speech_like_audio(0.5), fps=25.0))


