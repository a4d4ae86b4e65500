"""The `diff2lip` engine: status and wiring (`auto` never takes it without a GPU, alone or as FOMM's lip stage),
request validation, the lip stage's crop and paste-back on a tiny UNet, and end-to-end renders with
deterministic weights in test-written checkpoints: `engine: "diff2lip"` alone, and `quality_mode:
"high_quality"` through FOMM + Diff2Lip + GFPGAN.

Renders are tiny (0.3 s at 10 fps, 256 px, `diff2lip.steps` 2, the fewest the ddimN respacing allows): one
forward of the released 100 M-parameter UNet costs ~10 s at batch 3 on 2 CPU cores.
"""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_engine.engines import ENGINES, candidates, list_engines, select_chain
from avatar_engine.engines.diff2lip.engine import CPU_WARNING
from avatar_engine.engines.diff2lip.lips import Diff2LipPainter, crop_face
from avatar_engine.engines.fomm.nets import KPDetector, OcclusionAwareGenerator
from avatar_engine.errors import parse_error
from avatar_engine.runtime.detweights import det_state_dict
from avatar_engine.serving.worker import run_job
from avatar_engine.stages.restore.nets import gfpgan_v14
from tests.support.media import asset_bytes, probe_mp4, wav_bytes

from .conftest import TINY

FPS = 10
SECONDS = 0.3
FRAMES = 3  # ceil(0.3 s x 10 fps)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _speech_pcm(seconds: float, start_s: float = 1.0) -> np.ndarray:
    with wave.open(io.BytesIO(asset_bytes("speech_16k.wav"))) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    return pcm[int(start_s * 16000):int((start_s + seconds) * 16000)]


def _payload(**options) -> dict:
    return {"image_b64": _b64(asset_bytes("astronaut_512.png")), "audio_b64": _b64(wav_bytes(_speech_pcm(SECONDS)[None],
                                                                                          16000)),
            "fps": FPS, "size": 256, "seed": 3, "cache": False, "output": {"delivery": "base64"}, **options}


@pytest.fixture(scope="module")
def d2l_root(tmp_path_factory, det_model) -> Path:
    """MODEL_ROOT with the released architecture's det weights as a flat state_dict (as upstream saves it)."""
    root = tmp_path_factory.mktemp("d2l-models")
    (root / "diff2lip").mkdir()
    torch.save(det_model.state_dict(), root / "diff2lip" / "checkpoint.pt")
    return root


@pytest.fixture(scope="module")
def hq_root(tmp_path_factory, d2l_root) -> Path:
    """MODEL_ROOT with all three high-quality checkpoints: FOMM (`Logger.save_cpk` layout), Diff2Lip, GFPGAN."""
    root = tmp_path_factory.mktemp("hq-models")
    (root / "diff2lip").mkdir()
    (root / "diff2lip" / "checkpoint.pt").symlink_to(d2l_root / "diff2lip" / "checkpoint.pt")
    (root / "fomm").mkdir()
    torch.save({"kp_detector": det_state_dict(KPDetector()), "generator": det_state_dict(OcclusionAwareGenerator()),
                "discriminator": {}, "optimizer_generator": {}, "optimizer_kp_detector": {}, "epoch": 1},
               root / "fomm" / "vox-cpk.pth.tar")
    (root / "gfpgan").mkdir()
    torch.save({"params_ema": det_state_dict(gfpgan_v14())}, root / "gfpgan" / "GFPGANv1.4.pth")
    return root


# ------------------------------------------------------------------ status, wiring, validation


def test_status_names_the_checkpoint_and_its_license(settings, d2l_root):
    engine = ENGINES["diff2lip"]
    st = engine.status(settings)
    assert not st.available and "DIFF2LIP_CKPT" in st.reason and "CC BY-NC 4.0" in st.reason
    mounted = settings.model_copy(update={"model_root": d2l_root})
    st = engine.status(mounted)
    assert st.available and st.checkpoints == {"diff2lip": str(d2l_root / "diff2lip" / "checkpoint.pt")}
    assert list_engines(mounted)["diff2lip"]["available"]
    error = parse_error(run_job({"input": _payload(engine="diff2lip")}, settings=settings)["error"])
    assert error["code"] == "engine_unavailable" and "checkpoint.pt" in error["message"]


def test_auto_never_takes_diff2lip_without_a_gpu(settings, hq_root, monkeypatch):
    mounted = settings.model_copy(update={"model_root": hq_root})
    engine, fomm = ENGINES["diff2lip"], ENGINES["fomm"]
    assert engine.suits_auto(mounted) == torch.cuda.is_available()
    if torch.cuda.is_available():
        pytest.skip("the CPU rule needs a machine without CUDA")
    assert "diff2lip" not in [e.name for e in candidates("auto", mounted)]
    for mode in ("auto", "real_time"):
        assert all("diff2lip" not in plan.stages for plan in select_chain("auto", mode, mounted).plans)
    assert fomm.lip_stage(mounted).name == "parametric"  # FOMM's auto lips skip Diff2Lip on a CPU
    assert fomm.lip_stage(mounted, "diff2lip").name == "diff2lip"  # named: honoured
    monkeypatch.setattr(type(engine), "suits_auto", lambda self, s: True)
    assert fomm.lip_stage(mounted).name == "diff2lip"  # first in FOMM's list where it suits auto


@pytest.mark.parametrize("steps, needle", [(37, "integer stride"), (1, "greater than or equal to 2"),
                                           ("many", "integer")])
def test_bad_steps_are_invalid_input(settings, d2l_root, steps, needle):
    mounted = settings.model_copy(update={"model_root": d2l_root})
    error = parse_error(run_job({"input": _payload(engine="diff2lip", diff2lip={"steps": steps})},
                                settings=mounted)["error"])
    assert error["code"] == "invalid_input" and "diff2lip.steps" in error["message"] and needle in error["message"]
    error = parse_error(run_job({"input": _payload(diff2lip={"bogus": 1})}, settings=mounted)["error"])
    assert error["code"] == "invalid_input" and "bogus" in error["message"]


# ------------------------------------------------------------------ the lip stage on a tiny UNet


def test_painter_changes_only_the_lower_face_and_is_seeded(tiny_model, one_thread):
    """A tiny UNet of the same architecture (64 px): the stage's batching, crop and paste-back, in ms."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)
    box = (20, 100, 10, 90)  # y1, y2, x1, x2
    audio = _speech_pcm(0.5)
    reference = crop_face(frame, box, TINY.image_size)
    seen_steps = []

    def run(seed: int, window: int) -> list[np.ndarray]:
        painter = Diff2LipPainter(tiny_model, "cpu", steps=3, seed=seed, window=window)
        return list(painter.run(iter([frame] * 5), lambda i, f: box, reference, audio, FPS, 5,
                                check=seen_steps.append))

    out = run(seed=1, window=2)
    assert len(out) == 5 and len(seen_steps) == 3 * 4  # 3 windows (2, 2, 1 frames), checks before and after each step
    y1, y2, x1, x2 = box
    for image in out:
        outside = image.copy()
        outside[y1:y2, x1:x2] = frame[y1:y2, x1:x2]
        assert np.array_equal(outside, frame)  # nothing outside the box changes
        top = y1 + int(0.48 * (y2 - y1))  # the shared lower-face mask is exactly 0 above 48 % of the box
        assert np.array_equal(image[y1:top], frame[y1:top])
        assert np.abs(image[top:y2].astype(int) - frame[top:y2]).mean() > 1  # the mouth region was repainted
    assert all(np.array_equal(a, b) for a, b in zip(out, run(seed=1, window=2)))  # deterministic per seed
    # one window of 5: the same frames, as each frame's sample is independent (within 1 LSB: a different batch
    # size may pick a different convolution algorithm, and the faces are truncated to uint8)
    again = run(seed=1, window=5)
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(out, again))
    other = run(seed=2, window=5)
    assert not np.array_equal(out[0], other[0])


# ------------------------------------------------------------------ end to end (det weights)


def _check_video(result: dict, frames: int) -> None:
    info = probe_mp4(base64.b64decode(result["video_b64"]))
    assert info["frames"] == frames and (info["width"], info["height"]) == (256, 256) and info["fps"] == FPS


@pytest.mark.slow
def test_diff2lip_alone_renders_on_cpu_with_a_warning(settings, d2l_root):
    mounted = settings.model_copy(update={"model_root": d2l_root})
    result = run_job({"id": "d2l-alone", "input": _payload(engine="diff2lip", diff2lip={"steps": 2})},
                     settings=mounted)
    assert "error" not in result, result.get("error")
    assert result["engine"] == "diff2lip" and result["chain"] == ["diff2lip"] and "fallback_from" not in result
    assert result["frames"] == FRAMES and result["steps"] == 2 and result["lip_model"] == "checkpoint.pt"
    assert len(result["lip_box"]) == 4
    _check_video(result, FRAMES)
    if result["device"] == "cpu":
        assert CPU_WARNING.format(steps=2) in result["warnings"]


@pytest.mark.slow
def test_high_quality_chain_fomm_diff2lip_gfpgan(settings, hq_root):
    mounted = settings.model_copy(update={"model_root": hq_root})
    result = run_job({"id": "d2l-hq", "input": _payload(quality_mode="high_quality", diff2lip={"steps": 2})},
                     settings=mounted)
    assert "error" not in result, result.get("error")
    assert result["chain"] == ["fomm", "diff2lip", "gfpgan"] and "fallback_from" not in result
    assert result["engine"] == "fomm" and result["lip_stage"] == "diff2lip" and result["enhanced"] is True
    assert result["frames"] == FRAMES
    _check_video(result, FRAMES)
    if not torch.cuda.is_available():
        assert any("CPU" in w for w in result["warnings"])
