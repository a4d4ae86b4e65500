"""SadTalker audio side vs upstream goldens in tests/fixtures/sadtalker (det-filled weights): mel features,
Audio2Exp, Audio2Pose, MappingNet (+ per-channel probes of intermediate modules) and the coefficient glue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from avatar_engine.engines.sadtalker import glue as G
from avatar_engine.engines.sadtalker.nets.audio2coeff import Audio2Pose, SimpleWrapperV2
from avatar_engine.engines.sadtalker.nets.mapping import MappingNet
from avatar_engine.errors import AvatarError
from avatar_engine.netkit import fill_module
from tests.support.media import ASSETS

FIX = Path(__file__).parent / "fixtures" / "sadtalker"
TOL = 1e-4


def rel(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def golden(name: str):
    return np.load(FIX / f"golden_{name}.npz")


def tensor(d, key: str) -> torch.Tensor:
    return torch.from_numpy(np.array(d[key]))


def assert_keys(module: torch.nn.Module, name: str) -> None:
    ref = json.loads((FIX / f"keys_{name}.json").read_text())
    mine = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module.state_dict().items()]
    assert mine == ref


def probe_paths(d) -> list[str]:
    return [k.removeprefix("out_probe_mean.") for k in d.files if k.startswith("out_probe_mean.")]


def attach_probes(module: torch.nn.Module, paths: list[str]) -> tuple[dict, list]:
    """Per-channel mean/std (float64, ddof 0) of each path's first forward output."""
    got: dict = {}
    mods = dict(module.named_modules())

    def hook_for(path):
        def hook(_mod, _inp, out):
            if path not in got:
                o = out.detach().double()
                dims = [i for i in range(o.dim()) if i != 1]
                got[path] = (o.mean(dim=dims).numpy(), o.std(dim=dims, unbiased=False).numpy())

        return hook

    handles = [mods[p].register_forward_hook(hook_for(p)) for p in paths]
    return got, handles


def check_probes(d, got: dict) -> None:
    paths = probe_paths(d)
    assert paths and set(paths) == set(got)
    for p in paths:
        assert rel(got[p][0], d[f"out_probe_mean.{p}"]) < TOL, p
        assert rel(got[p][1], d[f"out_probe_std.{p}"]) < TOL, p


@pytest.fixture(scope="module")
def exp_net():
    return fill_module(SimpleWrapperV2())


@pytest.fixture(scope="module")
def pose_net():
    return fill_module(Audio2Pose())


def load_speech() -> np.ndarray:
    sr, pcm = wavfile.read(ASSETS / "speech_16k.wav")
    assert sr == 16000 and pcm.dtype == np.int16
    return pcm.astype(np.float32) / 32768.0


# --- audio features ---------------------------------------------------------------------------------


def test_audio_features_match_upstream():
    d = golden("audio_features")
    wav = load_speech()
    assert len(wav) == int(d["num_samples_raw"])
    np.testing.assert_array_equal(wav[:1000], d["wav_first_1000"])
    assert G.num_video_frames(len(wav)) == int(d["num_frames"])
    orig_mel, indiv = G.audio_features(wav)
    assert orig_mel.shape == d["orig_mel"].shape and indiv.shape == d["indiv_mels"].shape
    assert indiv.dtype == np.float32
    assert rel(orig_mel, d["orig_mel"]) < 1e-9
    assert rel(indiv, d["indiv_mels"]) < 1e-6


def test_audio_features_window_rule_and_short_audio():
    wav = np.random.default_rng(0).standard_normal(640 * 5 + 100).astype(np.float32) * 0.1
    orig_mel, indiv = G.audio_features(wav)
    mel32 = orig_mel.astype(np.float32)
    assert indiv.shape == (5, 80, 16) and orig_mel.shape == (1 + 640 * 5 // 200, 80)
    np.testing.assert_array_equal(indiv[0][:, :7], np.repeat(mel32[:1].T, 7, axis=1))  # start -6 clamps to 0
    np.testing.assert_array_equal(indiv[0][:, 6:], mel32[0:10].T)
    np.testing.assert_array_equal(indiv[2], mel32[0:16].T)
    with pytest.raises(AvatarError):
        G.audio_features(np.zeros(100, dtype=np.float32))


# --- networks ---------------------------------------------------------------------------------------


def test_audio2exp_keys(exp_net):
    assert_keys(exp_net, "audio2exp")


def test_audio2exp_direct_and_chunked(exp_net):
    d = golden("audio2exp")
    got, handles = attach_probes(exp_net, probe_paths(d))
    try:
        with torch.no_grad():
            out = exp_net(tensor(d, "in_x"), tensor(d, "in_ref"), tensor(d, "in_ratio"))
    finally:
        for h in handles:
            h.remove()
    assert rel(out.numpy(), d["out_out"]) < TOL
    check_probes(d, got)
    seq = G.audio2exp_test(exp_net, tensor(d, "in_seq_indiv_mels"), tensor(d, "in_seq_ref"), tensor(d, "in_seq_ratio_gt"))
    assert seq.shape == (1, 40, 64)
    assert rel(seq.numpy(), d["out_seq_exp_coeff_pred"]) < TOL


def test_audio2pose_keys(pose_net):
    assert_keys(pose_net, "audio2pose")


def test_audio2pose_test_and_smoothing(pose_net):
    d = golden("audio2pose")
    mels, ref = tensor(d, "in_indiv_mels"), tensor(d, "in_ref")
    z = tensor(d, "in_z")
    assert G.pose_chunks(int(d["in_num_frames"])) == z.shape[0]
    got, handles = attach_probes(pose_net, probe_paths(d))
    try:
        motion, pose = G.audio2pose_test(pose_net, mels, ref[:, 0, 64:70], tensor(d, "in_class"), z)
    finally:
        for h in handles:
            h.remove()
    assert rel(motion.numpy(), d["out_pose_motion_pred"]) < TOL
    assert rel(pose.numpy(), d["out_pose_pred"]) < TOL
    check_probes(d, got)
    with torch.no_grad():
        emb = pose_net.audio_encoder(mels[:, 1:33])
    assert rel(emb.numpy(), d["out_audio_emb_chunk0"]) < TOL
    assert rel(G.smooth_pose(pose.numpy()), d["out_pose_pred_savgol"]) < TOL


def test_audio2pose_short_clip_front_pads(pose_net):
    mels = torch.from_numpy(np.random.default_rng(1).uniform(-4, 4, (1, 6, 1, 80, 16)).astype(np.float32))
    z = G.pose_noise(6, 3)
    assert z.shape == (1, 1, 64)
    ref = torch.full((1, 6), 0.1)
    motion, pose = G.audio2pose_test(pose_net, mels, ref, torch.tensor([0]), z)
    assert motion.shape == (1, 6, 6) and torch.all(motion[:, 0] == 0)
    with torch.no_grad():
        emb = pose_net.audio_encoder(mels[:, 1:])
        padded = torch.cat([emb[:, :1].expand(-1, 27, -1), emb], dim=1)
        full = pose_net.netG.decoder(z[0], torch.tensor([0]), ref, padded)
    torch.testing.assert_close(motion[:, 1:], full[:, -5:])


@pytest.mark.parametrize("name, coeff_nc", [("mappingnet", 70), ("mappingnet_full", 73)])
def test_mappingnet(name, coeff_nc):
    d = golden(name)
    net = MappingNet(coeff_nc, 1024, 3, 15, 66)
    assert_keys(net, name)
    fill_module(net)
    got, handles = attach_probes(net, probe_paths(d))
    with torch.no_grad():
        out = net(tensor(d, "in_input_3dmm"))
    for h in handles:
        h.remove()
    for k in ("yaw", "pitch", "roll", "t", "exp"):
        assert rel(out[k].numpy(), d[f"out_{k}"]) < TOL, k
    if name == "mappingnet":
        check_probes(d, got)


# --- glue -------------------------------------------------------------------------------------------


def test_headpose_and_keypoint_glue():
    d = golden("glue")
    tol = 1e-5
    for a in ("yaw", "pitch", "roll"):
        assert rel(G.headpose_pred_to_degree(tensor(d, f"in_{a}")).numpy(), d[f"out_{a}_deg"]) < tol
    rot = G.get_rotation_matrix(*(tensor(d, f"out_{a}_deg") for a in ("yaw", "pitch", "roll")))
    assert rel(rot.numpy(), d["out_rot_mat"]) < tol
    rot = G.get_rotation_matrix(*(tensor(d, f"in_{a}_in") for a in ("yaw", "pitch", "roll")))
    assert rel(rot.numpy(), d["out_rot_mat_override"]) < tol

    def he(override=False):
        h = {k: tensor(d, f"in_{k}") for k in ("yaw", "pitch", "roll", "t", "exp")}
        if override:
            h.update({f"{a}_in": tensor(d, f"in_{a}_in") for a in ("yaw", "pitch", "roll")})
        return h

    kp = tensor(d, "in_kp_canonical")
    h = he()
    assert rel(G.keypoint_transformation(kp, h).numpy(), d["out_kp_transformed"]) < tol
    np.testing.assert_array_equal(h["t"].numpy(), d["out_t_after_inplace"])  # mutated in place
    assert rel(G.keypoint_transformation(kp, he(), wo_exp=True).numpy(), d["out_kp_transformed_wo_exp"]) < tol
    assert rel(G.keypoint_transformation(kp, he(True)).numpy(), d["out_kp_transformed_override"]) < tol


def test_semantics_smoothing_camera_glue():
    d = golden("glue")
    tol = 1e-5
    coeffs = d["in_coeffs"]
    assert rel(G.transform_semantic_1(coeffs[:1]), d["out_source_semantics"]) < tol
    target = np.stack([G.transform_semantic_target(coeffs, i) for i in range(len(coeffs))])
    assert rel(target, d["out_target_semantics"]) < tol
    assert rel(G.smooth_pose(d["in_pose8"]), d["out_pose8_savgol"]) < tol
    assert rel(G.gen_camera_pose([0, 20, -10], 8, 2), d["out_camera_yaw_seq"]) < tol
    np.testing.assert_array_equal(G.gen_camera_pose([5], 3, 2), [[5, 5], [5, 5]])
    np.testing.assert_array_equal(G.gen_camera_pose([0, 0, 10], 3, 1), [[0, 5, 5]])  # flat segment adds nothing
    pose2 = np.arange(12.0).reshape(1, 2, 6)
    np.testing.assert_array_equal(G.smooth_pose(pose2), pose2)


def test_blink_sequence_seeded():
    a = G.blink_sequence(500, 7)
    np.testing.assert_array_equal(a, G.blink_sequence(500, np.random.default_rng(7)))
    assert a.dtype == np.float32 and a.shape == (500,)
    starts = [i for i in range(500) if a[i] == 0.5 and (i == 0 or a[i - 1] == 0)]
    assert len(starts) >= 3
    for s in starts:
        np.testing.assert_array_equal(a[s : s + 5], np.float32([0.5, 0.9, 1.0, 0.9, 0.5]))
    gaps = np.diff([0] + [s + 5 for s in starts])  # blink end -> next blink end
    assert starts[0] >= 50 and np.all(gaps[1:] >= 55) and np.all(gaps <= 155)
    assert not np.array_equal(a, G.blink_sequence(500, 8))
    assert not G.blink_sequence(40, 0).any()


# --- composed ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_audio_to_coeffs_det_weights(exp_net, pose_net):
    wav = load_speech()[: 16000 * 3 // 2]  # 37 frames: one full pose chunk + a remainder chunk
    ref = np.linspace(-0.5, 0.5, 70).astype(np.float32)
    out = G.audio_to_coeffs(wav, ref, exp_net, pose_net, pose_style=3, seed=11)
    assert out.shape == (37, 70) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, G.audio_to_coeffs(wav, ref, exp_net, pose_net, pose_style=3, seed=11))
    assert not np.array_equal(out[:, 64:], G.audio_to_coeffs(wav, ref, exp_net, pose_net, pose_style=3, seed=12)[:, 64:])
    still = G.audio_to_coeffs(wav, ref, exp_net, pose_net, pose_style=3, seed=11, still=True, expression_scale=2.0)
    np.testing.assert_array_equal(still[:, 64:], np.repeat(ref[None, 64:], 37, axis=0))
    np.testing.assert_allclose(still[:, :64], 2.0 * out[:, :64], rtol=1e-6)
    with pytest.raises(AvatarError):
        G.audio_to_coeffs(wav, ref, exp_net, pose_net, pose_style=46)
