"""Wav2Lip port vs. upstream goldens (det-filled weights, see tests/fixtures/wav2lip/README.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avatar_engine.audio.mel import melspectrogram
from avatar_engine.engines.wav2lip.nets import Wav2Lip, load_wav2lip, mel_chunk_starts
from avatar_engine.errors import AvatarError
from avatar_engine.runtime.detweights import det_state_dict, fill_module
from tests.support.golden import assert_defect_caught, assert_golden, float64_copy
from tests.support.media import FIXTURES as FIXTURE_ROOT

FIXTURES = FIXTURE_ROOT / "wav2lip"
# Tolerances (rel L2, per stored tensor: output, logits, audio/encoder/decoder intermediates).
# float64 rebuild: lands a fixed, CPU-independent distance from the float32 golden (README fp64-vs-fp32:
# <= 9.5e-7, on logits; measured the same here); 1e-5 is >= 10x that and 10x tighter than DETWEIGHTS' floor.
FLOAT64_TOL = {"*": 1e-5}
# float32 rerun (the production dtype): README jitter <= 1.0e-6 on every tensor (fresh process, fp64, an
# independent port), so DETWEIGHTS' 1e-4 leaves >= 100x for another CPU's float32 rounding.
FLOAT32_TOL = {"*": 1e-4}


@pytest.fixture(scope="module")
def det_model() -> Wav2Lip:
    return fill_module(Wav2Lip())


@pytest.fixture(scope="module")
def det_model64(det_model) -> Wav2Lip:
    return float64_copy(det_model)


def run_with_intermediates(model: Wav2Lip, audio: np.ndarray, faces: np.ndarray) -> dict[str, np.ndarray]:
    """Forward pass that also captures the tensors the golden stores, named as in the README (in the inputs' dtype)."""
    taps = {f"audio_enc_{i}": model.audio_encoder[i] for i in (2, 5, 8, 10)}
    taps["audio_embedding"] = model.audio_encoder
    taps.update({f"enc_feat_{i}": block for i, block in enumerate(model.face_encoder_blocks)})
    taps.update({f"dec_out_{i}": model.face_decoder_blocks[i] for i in range(3)})
    taps["logits"] = model.output_block[1]
    captured: dict[str, np.ndarray] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach().numpy().copy()))
        for name, module in taps.items()
    ]
    try:
        with torch.no_grad():
            captured["output"] = model(torch.from_numpy(audio), torch.from_numpy(faces)).numpy()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def test_state_dict_layout_matches_official_checkpoint():
    expected = json.loads((FIXTURES / "keys.json").read_text())["Wav2Lip"]
    actual = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in Wav2Lip().state_dict().items()]
    assert actual == expected
    assert sum(p.numel() for p in Wav2Lip().parameters()) == 36_298_035


def _forward_4d(model, dtype) -> tuple[dict, dict]:
    golden = dict(np.load(FIXTURES / "golden_forward.npz"))
    got = run_with_intermediates(model, golden["audio_sequences"].astype(dtype), golden["face_sequences"].astype(dtype))
    return {k: got[k] for k in golden if k in got}, golden


def test_forward_4d_float64_matches_golden_including_every_intermediate(det_model64):
    got, golden = _forward_4d(det_model64, np.float64)
    assert len(got) == 17  # output, logits, 5 audio, 7 encoder, 3 decoder tensors
    assert_golden(got, golden, FLOAT64_TOL)


def test_forward_4d_float32_matches_golden(det_model):
    got, golden = _forward_4d(det_model, np.float32)
    assert len(got) == 17 and got["output"].dtype == np.float32
    assert_golden(got, golden, FLOAT32_TOL)


def test_forward_mutation_missing_residual_fails(det_model64, monkeypatch):
    """The first residual block of face-encoder stage 1 without its `+ x` must fail the golden."""
    monkeypatch.setattr(det_model64.face_encoder_blocks[1][1], "residual", False)
    got, golden = _forward_4d(det_model64, np.float64)
    bad = assert_defect_caught(got, golden, FLOAT64_TOL)
    assert "enc_feat_1" in bad


def test_forward_5d_matches_golden_and_keeps_time_major_pairing(det_model64):
    golden = np.load(FIXTURES / "golden_forward_5d.npz")
    audio, faces = golden["audio_sequences"].astype(np.float64), golden["face_sequences"].astype(np.float64)
    got = run_with_intermediates(det_model64, audio, faces)
    assert got["output"].shape == (2, 3, 2, 96, 96)
    flat = {"output": got["output"], "audio_embedding_flat": got["audio_embedding"], "dec_out_1_flat": got["dec_out_1"]}
    assert_golden(flat, golden, FLOAT64_TOL)  # float64: fixed deviation <= 1.6e-7 (README 5-D: 1.2e-7 jitter)
    with torch.no_grad():
        for t in range(2):
            step = det_model64(torch.from_numpy(audio[:, t]), torch.from_numpy(faces[:, :, t])).numpy()
            # float64: a 5-D call and the per-step 4-D calls agree to rounding (~1e-15); 1e-10 catches any mix-up
            np.testing.assert_allclose(got["output"][:, :, t], step, rtol=0, atol=1e-10)


def test_melspectrogram_matches_upstream_librosa():
    golden = np.load(FIXTURES / "golden_mel.npz")
    mel = melspectrogram(golden["wav"])
    assert mel.shape == (80, 474) and mel.dtype == np.float32
    assert np.abs(mel - golden["mel"]).max() < 1e-4
    # float64 reference (librosa 0.11, reflect padding): our float64 path agrees much tighter
    assert np.abs(mel - golden["mel_librosa011_reflect_f64"]).max() < 5e-6


def test_mel_chunk_starts_reproduce_upstream_for_every_fps():
    golden = json.loads((FIXTURES / "golden_chunks.json").read_text())
    total = golden["mel_frames_T"]
    assert mel_chunk_starts(total, golden["fps"]) == golden["starts"]
    for fps, starts in golden["extra_fps"].items():
        assert mel_chunk_starts(total, float(fps)) == starts, fps


def test_mel_chunk_starts_can_cover_the_full_audio():
    golden = json.loads((FIXTURES / "golden_chunks.json").read_text())
    upstream = golden["starts"]  # 145 frames although the 5.92 s clip needs 148 at 25 fps
    full = mel_chunk_starts(474, 25.0, n_frames=148)
    assert len(full) == 148
    assert full[:145] == upstream
    assert full[145:] == [474 - 16] * 3
    assert mel_chunk_starts(474, 25.0, n_frames=10) == upstream[:10]
    with pytest.raises(ValueError):
        mel_chunk_starts(15, 25.0)


def _upstream_layout_checkpoint(model: Wav2Lip) -> dict:
    """What `wav2lip_train.py` saves from a DataParallel model: prefixed keys plus Adam state."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for param in list(model.parameters())[:2]:  # a little real moment state, not 290 MB of it
        optimizer.state[param] = {
            "step": torch.tensor(3.0),
            "exp_avg": torch.zeros_like(param),
            "exp_avg_sq": torch.zeros_like(param),
        }
    return {
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "global_step": 250_000,
        "global_epoch": 42,
    }


@pytest.fixture(scope="module")
def det_weights() -> dict:
    return det_state_dict(Wav2Lip())


@pytest.mark.parametrize("legacy_format", [False, True], ids=["zip", "legacy-pickle"])
def test_load_upstream_training_checkpoint(tmp_path, det_model, det_weights, legacy_format):
    # the 2020 release files predate torch's zip format, so the legacy pickle must load too
    path = tmp_path / "wav2lip_gan.pth"
    torch.save(_upstream_layout_checkpoint(det_model), path, _use_new_zipfile_serialization=not legacy_format)
    loaded = load_wav2lip(path)
    assert not loaded.training
    loaded_sd = loaded.state_dict()
    assert loaded_sd.keys() == det_weights.keys()
    assert all(torch.equal(loaded_sd[k], det_weights[k]) for k in det_weights)


def test_load_flat_state_dict_without_prefix(tmp_path, det_weights):
    path = tmp_path / "wav2lip_flat.pth"
    torch.save(det_weights, path)
    loaded_sd = load_wav2lip(path).state_dict()
    assert all(torch.equal(loaded_sd[k], det_weights[k]) for k in det_weights)


@pytest.mark.parametrize("legacy_format", [False, True], ids=["zip", "legacy-pickle"])
def test_truncated_checkpoint_is_engine_unavailable(tmp_path, det_weights, legacy_format):
    full = tmp_path / "full.pth"
    small = {k: v for k, v in list(det_weights.items())[:20]}
    torch.save({"state_dict": small}, full, _use_new_zipfile_serialization=not legacy_format)
    data = full.read_bytes()
    truncated = tmp_path / "wav2lip_truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(AvatarError) as info:
        load_wav2lip(truncated)
    assert info.value.code == "engine_unavailable"
    assert "wav2lip_truncated.pth" in info.value.message


def test_html_page_saved_as_checkpoint_is_engine_unavailable(tmp_path):
    # what `wget https://huggingface.co/.../blob/main/wav2lip.pth` (a web page) leaves behind
    path = tmp_path / "wav2lip_html.pth"
    path.write_text("<!DOCTYPE html><html><head><title>wav2lip.pth</title></head><body></body></html>")
    with pytest.raises(AvatarError) as info:
        load_wav2lip(path)
    assert info.value.code == "engine_unavailable"
    assert "wav2lip_html.pth" in info.value.message


def test_checkpoint_of_another_network_is_engine_unavailable(tmp_path):
    path = tmp_path / "disc_wav2lip.pth"
    torch.save({"state_dict": {"face_encoder_blocks.0.0.conv_block.0.weight": torch.zeros(32, 3, 7, 7)}}, path)
    with pytest.raises(AvatarError) as info:
        load_wav2lip(path)
    assert info.value.code == "engine_unavailable"
    assert "disc_wav2lip.pth" in info.value.message and "missing" in info.value.message


def test_missing_checkpoint_is_engine_unavailable(tmp_path):
    with pytest.raises(AvatarError) as info:
        load_wav2lip(tmp_path / "nowhere.pth")
    assert info.value.code == "engine_unavailable"
    assert "nowhere.pth" in info.value.message
