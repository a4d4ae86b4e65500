"""The `sadtalker` engine: crop/paste/resampling helpers, checkpoint discovery, and renders through the worker
with deterministic (det_fill) weights written as an official-layout checkpoint folder."""

from __future__ import annotations

import base64
import io
import shutil
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from avatar_engine import engines as registry
from avatar_engine.audio.frames import frame_count
from avatar_engine.audio.io import decode_audio
from avatar_engine.engines.base import RenderJob
from avatar_engine.engines.sadtalker import checkpoints as ck
from avatar_engine.engines.sadtalker import engine as st
from avatar_engine.engines.sadtalker.framing import (
    coeff_frames_for,
    driving_coeffs,
    mapping_windows,
    pad_audio,
    resample_coeffs,
)
from avatar_engine.engines.sadtalker.glue import transform_semantic_target
from avatar_engine.errors import AvatarError, parse_error
from avatar_engine.media.image import decode_image, fit_image
from avatar_engine.runtime.detweights import det_state_dict, fill_module
from avatar_engine.schema import parse_request
from avatar_engine.serving.deadline import Deadline
from avatar_engine.serving.worker import run_job
from tests.support.media import FIXTURES as FIXTURE_ROOT
from tests.support.media import asset_bytes, probe_mp4, wav_bytes

FIX = FIXTURE_ROOT / "sadtalker"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _speech(start_s: float, seconds: float) -> np.ndarray:
    with wave.open(io.BytesIO(asset_bytes("speech_16k.wav"))) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    return pcm[int(start_s * 16000):int((start_s + seconds) * 16000)]


# ------------------------------------------------------------------ crop geometry and paste-back


# ------------------------------------------------------------------ coefficients at the output rate


def test_resample_coeffs_identity_at_25_linear_otherwise():
    c = np.arange(10, dtype=np.float32)[:, None] * np.array([[1.0, -2.0]], np.float32)
    assert np.array_equal(resample_coeffs(c, 10, 25), c)
    r = resample_coeffs(c, 4, 10)  # times 0, .1, .2, .3 s -> 25 fps indices 0, 2.5, 5, 7.5
    assert np.allclose(r[:, 0], [0, 2.5, 5, 7.5]) and np.allclose(r[:, 1], [0, -5, -10, -15])
    r = resample_coeffs(c, 20, 50)  # past the end: clamped to the last frame
    assert np.allclose(r[:, 0], np.minimum(np.arange(20) / 2, 9))


def test_pad_audio_covers_the_tail():
    assert coeff_frames_for(640) == 1 and coeff_frames_for(641) == 2 and coeff_frames_for(1) == 1
    assert len(pad_audio(np.ones(1000, np.float32))) == 1280
    assert len(pad_audio(np.ones(1280, np.float32))) == 1280
    # every output frame of the pipeline's count has a 25 fps coefficient frame at or before its time
    for seconds, fps in ((0.3, 10), (2.107, 25), (1.0, 60)):
        n = frame_count(seconds, fps)
        assert (n - 1) * 25 / fps < coeff_frames_for(int(seconds * 16000))


def test_mapping_windows_match_the_glue_and_append_crop_params():
    coeffs = np.random.default_rng(1).standard_normal((6, 70)).astype(np.float32)
    w = mapping_windows(coeffs, 2, 5)
    assert w.shape == (3, 70, 27) and w.dtype == np.float32
    assert np.array_equal(w[1], transform_semantic_target(coeffs, 3))
    full = mapping_windows(coeffs, 0, 6, extra=np.array([0.8, 128.0, 127.0]))
    assert full.shape == (6, 73, 27)
    assert np.array_equal(full[:, :70], mapping_windows(coeffs, 0, 6)) and np.all(full[:, 72] == 127.0)


@pytest.fixture(scope="module")
def audio_nets():
    return fill_module(ck._build("audio2exp", "crop")), fill_module(ck._build("audio2pose", "crop"))


def test_driving_coeffs_same_seed_same_coeffs(audio_nets):
    a2e, a2p = audio_nets
    wav = _speech(0.5, 1.2)
    ref = np.random.default_rng(2).standard_normal(70).astype(np.float32) * 0.1
    kw = {"pose_style": 5, "expression_scale": 1.5}
    a = driving_coeffs(wav, ref, a2e, a2p, fps=25, n_frames=30, seed=7, **kw)
    b = driving_coeffs(wav, ref, a2e, a2p, fps=25, n_frames=30, seed=7, **kw)
    assert a.shape == (30, 70) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, driving_coeffs(wav, ref, a2e, a2p, fps=25, n_frames=30, seed=8, **kw))
    # another frame rate samples the same 25 fps motion
    ten = driving_coeffs(wav, ref, a2e, a2p, fps=10, n_frames=frame_count(1.2, 10), seed=7, **kw)
    assert ten.shape == (12, 70) and np.allclose(ten, resample_coeffs(a, 12, 10), atol=1e-6)


# ------------------------------------------------------------------ checkpoint discovery


def _touch(d: Path, *names: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"x")
    return d


def test_status_and_sizes_from_checkpoint_files(tmp_path, settings):
    engine = registry.ENGINES["sadtalker"]
    st_ = engine.status(settings)
    assert not st_.available and "mapping_00229-model.pth.tar" in st_.reason and "does not exist" in st_.reason
    d = _touch(settings.model_root / "sadtalker", "mapping_00229-model.pth.tar")
    st_ = engine.status(settings)
    assert not st_.available and "SadTalker_V0.0.2_256.safetensors" in st_.reason
    assert st_.checkpoints == {"mapping_crop": str(d / "mapping_00229-model.pth.tar")}
    _touch(d, "SadTalker_V0.0.2_512.safetensors")
    assert engine.status(settings).available
    assert registry.candidates("auto", settings)[0].name != "sadtalker"  # no GPU here: too slow for `auto`
    on_cpu_too = settings.model_copy(update={"sadtalker_auto_min_gpu_gb": 0})
    assert registry.candidates("auto", on_cpu_too)[0].name == "sadtalker"
    assert st.render_sizes(d) == [512] and st.render_sizes(d, "full") == []
    _touch(d, *ck.OLD_FILES.values())  # the old layout adds a 256 renderer only
    assert st.render_sizes(d) == [256, 512]
    assert st.choose_size([256, 512], "real_time") == 256 and st.choose_size([256, 512], "high_quality") == 512
    assert st.choose_size([512], "auto") == 512
    other = _touch(tmp_path / "elsewhere", "mapping_00229-model.pth.tar", "SadTalker_V0.0.2_256.safetensors")
    explicit = settings.model_copy(update={"sadtalker_ckpt_dir": other})
    assert st.checkpoint_dir(explicit) == other
    assert engine.status(explicit).checkpoints["safetensors_256"] == str(other / "SadTalker_V0.0.2_256.safetensors")


def test_missing_checkpoints_explicit_engine_is_unavailable(settings):
    wav = wav_bytes(_speech(1.0, 0.3)[None], 16000)
    result = run_job({"input": {"image_b64": _b64(asset_bytes("astronaut_512.png")), "audio_b64": _b64(wav),
                                "engine": "sadtalker", "fps": 10}}, settings=settings)
    err = parse_error(result["error"])
    assert err["code"] == "engine_unavailable" and "SadTalker" in err["message"]
    assert registry.candidates("auto", settings)[0].name != "sadtalker"


def test_frames_stream_in_batches_and_honour_the_deadline(monkeypatch, settings):
    calls = []

    def fake_batch(nets, device, coeffs, start, stop, *rest):
        calls.append((start, stop))
        return np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(start, stop)])

    monkeypatch.setattr(st, "render_batch", fake_batch)
    job = RenderJob(request=None, image=None, audio=None, fps=25, n_frames=19, settings=settings)
    frames = st._frames(None, None, np.zeros((19, 70)), None, None, None, lambda f: f[0, 0, 0], 8, job)
    assert next(frames) == 0 and calls == [(0, 8)]  # lazy: one batch computed for the first frame
    assert list(frames) == list(range(1, 19)) and calls == [(0, 8), (8, 16), (16, 19)]
    job.deadline = Deadline(0.0, start=time.perf_counter() - 1)  # time is up
    with pytest.raises(AvatarError) as err:
        next(st._frames(None, None, np.zeros((3, 70)), None, None, None, lambda f: f, 8, job))
    assert err.value.code == "timeout"


# ------------------------------------------------------------------ renders with det weights


def _snuv() -> dict:
    with np.load(FIX / "golden_generator.npz") as z:
        return {k.removeprefix("snuv."): torch.from_numpy(z[k]) for k in z.files if k.startswith("snuv.")}


def _det(name: str, preprocess: str = "crop") -> dict:
    sd = det_state_dict(ck._build(name, preprocess))
    if name == "generator":  # det-filled spectral-norm u/v are meaningless (README): use the fixtures' u/v
        sd.update(_snuv())
    return sd


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    """MODEL_ROOT with sadtalker/ in the new layout (256 safetensors + both MappingNet files), det weights."""
    root = tmp_path_factory.mktemp("models")
    d = root / "sadtalker"
    d.mkdir()
    flat = {}
    for prefix in ck.SAFETENSORS_PREFIXES:
        flat.update({f"{prefix}.{k}": v for k, v in _det(prefix).items()})
    save_file(flat, str(d / ck.safetensors_name(256)))
    del flat
    torch.save({"mapping": _det("mapping", "crop"), "epoch": 229}, d / ck.mapping_name("crop"))
    torch.save({"mapping": _det("mapping", "full"), "epoch": 109}, d / ck.mapping_name("full"))
    yield root
    st.NETS.clear()
    shutil.rmtree(root, ignore_errors=True)  # ~0.8 GB of weights; pytest keeps old tmp dirs around


@pytest.fixture
def det_settings(settings, model_root):
    return settings.model_copy(update={"model_root": model_root, "sadtalker_auto_min_gpu_gb": 0})


@pytest.mark.slow
def test_det_checkpoints_make_sadtalker_the_auto_choice(det_settings):
    status = registry.ENGINES["sadtalker"].status(det_settings)
    assert status.available, status.reason
    assert {"safetensors_256", "mapping_crop", "mapping_full"} <= set(status.checkpoints)
    assert registry.candidates("auto", det_settings)[0].name == "sadtalker"
    assert registry.list_engines(det_settings)["sadtalker"]["available"]
    registry.ENGINES["sadtalker"].warm_up(det_settings)  # loads once; the renders below reuse these nets
    nets, device = st.NETS.get(det_settings.model_root / "sadtalker", 256, "crop")
    assert device.type == "cpu" and nets.checkpoints.layout == "safetensors" and nets.size == 256
    assert st.NETS.get(det_settings.model_root / "sadtalker", 256, "crop")[0] is nets


@pytest.mark.slow
def test_render_through_the_worker(det_settings):
    """Three frames (0.3 s at 10 fps) through the real networks: the generator costs 6-15 s a frame on 2 CPU cores."""
    wav = wav_bytes(_speech(1.0, 0.3)[None], 16000)
    payload = {"image_b64": _b64(asset_bytes("astronaut_512.png")), "audio_b64": _b64(wav), "engine": "sadtalker",
               "fps": 10, "seed": 3, "output": {"delivery": "base64"}}
    result = run_job({"id": "st1", "input": payload}, settings=det_settings)
    assert "error" not in result, result.get("error")
    assert result["engine"] == "sadtalker" and "fallback_from" not in result
    assert result["preprocess"] == "crop" and result["size"] == 256 and result["device"] == "cpu"
    assert result["frames"] == 3 and len(result["crop_box"]) == 4
    info = probe_mp4(base64.b64decode(result["video_b64"]))
    assert info["frames"] == 3 and (info["width"], info["height"]) == (512, 512) and info["fps"] == 10


@pytest.mark.slow
def test_full_mode_shares_nets_and_keeps_the_picture(det_settings, monkeypatch):
    """`full` loads only the 73-channel MappingNet beside the cached nets; like `crop` it pastes the face
    back into the untouched portrait (upstream's meaning of `full`)."""
    request = parse_request({"engine": "sadtalker", "preprocess": "full", "fps": 10, "size": 256}, local=True)
    image = fit_image(decode_image(asset_bytes("astronaut_512.png"), max_pixels=10**7), 256)
    audio = decode_audio(wav_bytes(_speech(1.0, 0.3)[None], 16000), max_seconds=10, min_seconds=0.2)
    job = RenderJob(request=request, image=image, audio=audio, fps=10, n_frames=3, settings=det_settings,
                    source_scale=2.0)
    seen = []

    def fake_batch(nets, device, coeffs, start, stop, *rest):
        seen.append(coeffs.shape)
        return np.full((stop - start, 256, 256, 3), 77, np.uint8)

    monkeypatch.setattr(st, "render_batch", fake_batch)
    prepared = registry.ENGINES["sadtalker"].prepare(job)
    assert prepared.info["preprocess"] == "full" and len(prepared.info["crop_box"]) == 4
    frames = list(prepared.frames)
    assert len(frames) == 3 and frames[0].shape == (256, 256, 3)
    assert np.array_equal(frames[0][:8, :8], image[:8, :8])  # outside the face crop: the portrait itself
    assert set(seen) == {(3, 73)}  # driving coeffs carry the source's crop params for the 73-channel MappingNet
    full, _ = st.NETS.get(det_settings.model_root / "sadtalker", 256, "full")
    crop, _ = st.NETS.get(det_settings.model_root / "sadtalker", 256, "crop")
    assert full.generator is crop.generator and full.mapping is not crop.mapping
    assert full.mapping.first[0].in_channels == 73 and crop.mapping.first[0].in_channels == 70
    assert full.checkpoints.mapping.name == "mapping_00109-model.pth.tar"


@pytest.mark.slow
def test_render_with_musetalk_lips_under_the_commercial_policy(det_settings):
    """SadTalker motion + the MuseTalk lip stage through the worker, every model in the result sellable (#24)."""
    from avatar_engine.engines.musetalk.detweights import write_tree
    from tests.engines.musetalk.conftest import load_json, tiny_configs

    configs = {"unet": load_json("unet_config.json")["musetalk_json_as_shipped"],
               "vae": load_json("vae_config.json")["sd_vae_ft_mse_config_json"],
               "whisper": load_json("whisper_config.json")["whisper_tiny_architecture"]}
    tiny = tiny_configs(configs)
    write_tree(det_settings.model_root / "musetalk", tiny["unet"], tiny["vae"], tiny["whisper"])
    try:
        wav = wav_bytes(_speech(1.0, 0.3)[None], 16000)
        payload = {"image_b64": _b64(asset_bytes("astronaut_512.png")), "audio_b64": _b64(wav), "engine": "sadtalker",
                   "sadtalker": {"lip_refine": True, "lips": "musetalk"}, "fps": 10, "seed": 3,
                   "output": {"delivery": "base64"}}
        commercial = det_settings.model_copy(update={"model_licenses": "commercial"})
        result = run_job({"id": "st-mt", "input": payload}, settings=commercial)
        assert "error" not in result, result.get("error")
        assert result["engine"] == "sadtalker" and result["lip_refine"] == "musetalk"
        assert {m["name"] for m in result["models"]} == {"sadtalker", "musetalk"}, result["models"]
        assert all(m["commercial_use"] for m in result["models"]), result["models"]
        assert probe_mp4(base64.b64decode(result["video_b64"]))["frames"] == 3
    finally:
        shutil.rmtree(det_settings.model_root / "musetalk", ignore_errors=True)
