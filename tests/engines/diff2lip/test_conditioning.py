"""Diff2Lip's conditioning vs. upstream's generate.py/tfg_data_util.py, and one batched window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_engine.audio.frames import frame_count_for_samples
from avatar_engine.audio.mel import MEL_WINDOW, SAMPLE_RATE, melspectrogram
from avatar_engine.engines.diff2lip.conditioning import (
    compose_faces,
    condition_image,
    faces_to_model,
    lower_face_mask,
    mel_window_starts,
    mel_windows,
    sample_window,
    seed_noise,
)


def test_zero_padded_mel_reproduces_upstream(golden_unet):
    # Diff2Lip's reference ran librosa >= 0.9 (zero centre padding); the README wants < 1e-5
    mel = melspectrogram(golden_unet["wav"], padding="zero", dtype=np.float64).T
    assert np.abs(mel - golden_unet["mel_full"]).max() < 1e-5
    reflect = melspectrogram(golden_unet["wav"], padding="reflect").T
    assert np.abs(reflect - golden_unet["mel_full"]).max() > 1e-2  # the padding choice is visible


def test_window_starts_use_diff2lips_offset_and_cover_the_whole_audio(golden_unet):
    wav = golden_unet["wav"]
    mel_frames = golden_unet["mel_full"].shape[0]  # 474
    n_frames = frame_count_for_samples(len(wav), 25, SAMPLE_RATE)  # 149: 5.92 s at 25 fps
    starts = mel_window_starts(n_frames, 25, mel_frames)
    upstream = golden_unet["mel_window_starts"]  # 145 windows: upstream stops at the first short one
    np.testing.assert_array_equal(starts[: len(upstream)], upstream)
    assert starts[0] == starts[1] == 0  # int(80 * max(k - 1, 0) / 25): frames 0 and 1 share a window
    assert (starts[len(upstream):] == mel_frames - MEL_WINDOW).all()  # clamped, not dropped
    windows = mel_windows(golden_unet["mel_full"].T, n_frames, 25)
    assert windows.shape == (n_frames, 80, 16) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[golden_unet["frame_indices"]], golden_unet["indiv_mels"])


@pytest.mark.parametrize("fps", [24, 30, 60])
def test_windows_at_other_frame_rates(fps):
    mel_frames = 400  # 5 s
    n_frames = frame_count_for_samples(5 * SAMPLE_RATE, fps, SAMPLE_RATE)
    starts = mel_window_starts(n_frames, fps, mel_frames)
    assert len(starts) == 5 * fps
    assert (np.diff(starts) >= 0).all() and starts.max() == mel_frames - MEL_WINDOW
    assert starts[10] == int(80 * (9 / fps))


def test_window_arguments_are_checked():
    with pytest.raises(ValueError, match="mel frames"):
        mel_window_starts(5, 25, 10)
    with pytest.raises(ValueError, match="fps"):
        mel_window_starts(5, 0, 100)


def test_image_mask_noise_and_condition_match_upstream(golden_unet):
    faces = np.stack([golden_unet["face_crop_uint8"]] * 2)
    img = faces_to_model(faces)
    np.testing.assert_array_equal(img.numpy(), golden_unet["img_batch"])
    np.testing.assert_array_equal(faces_to_model(golden_unet["ref_crop_uint8"])[0].numpy(), golden_unet["ref_img"][1])
    mask = lower_face_mask(128)
    np.testing.assert_array_equal(mask.expand(2, -1, -1, -1).numpy(), golden_unet["mask"])
    assert mask[0, 0, 63].sum() == 0 and mask[0, 0, 64].sum() == 128  # rows >= 64 hidden
    # what torch.manual_seed(7); torch.randn((1,3,128,128)) gives: bit-equal on AVX2/AVX-512, but torch's
    # scalar normal path (ATEN_CPU_CAPABILITY=default, CPUs without AVX2) rounds differently: 1.8e-6 measured
    noise = seed_noise(7, 128)
    np.testing.assert_allclose(noise.numpy(), golden_unet["init_noise"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(condition_image(img, mask, noise).numpy(), golden_unet["cond_img"], rtol=0, atol=1e-5)


def test_seed_noise_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seed_noise(7, 16)
    assert torch.equal(torch.rand(3), expected)


def test_compose_truncates_like_upstream(golden_unet, golden_sampler):
    faces = compose_faces(torch.from_numpy(golden_sampler["loop_sample"]),
                          torch.from_numpy(golden_unet["img_batch"][:1]), lower_face_mask(128))
    np.testing.assert_array_equal(faces, golden_sampler["loop_recon_uint8"])


def test_sample_window_runs_every_frame_of_a_window_as_one_batch(tiny_model, monkeypatch, one_thread):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, (3, 80, 16)).astype(np.float32)
    batches: list[int] = []
    forward = tiny_model.forward

    def counting(x, t, **kwargs):
        batches.append(x.shape[0])
        assert (t == t[0]).all()
        return forward(x, t, **kwargs)

    monkeypatch.setattr(tiny_model, "forward", counting)
    result = sample_window(tiny_model, frames, frames[0], mels, steps=3, seed=7)
    assert batches == [3, 3, 3]  # one forward per step, all frames together
    assert result.faces.shape == (3, 64, 64, 3) and result.faces.dtype == np.uint8
    assert result.sample.shape == (3, 3, 64, 64)
    upper = result.faces[:, :32].astype(np.int16) - frames[:, :32]
    assert set(np.unique(upper).tolist()) <= {-1, 0}  # the given half, up to upstream's truncation
    again = sample_window(tiny_model, frames, frames[0], mels, steps=3, seed=7)
    np.testing.assert_array_equal(again.faces, result.faces)  # deterministic per seed
    other = sample_window(tiny_model, frames, frames[0], mels, steps=3, seed=8)
    assert not np.array_equal(other.sample.numpy(), result.sample.numpy())


def test_sample_window_checks_its_batch(tiny_model):
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="mel windows"):
        sample_window(tiny_model, frames, frames, np.zeros((3, 80, 16), np.float32), steps=2)
