"""`enhance: true`: GFPGAN over rendered frames, with a deterministic-weight checkpoint."""

import base64
import itertools

import numpy as np
import pytest
import torch

from avatar_engine.errors import AvatarError, parse_error
from avatar_engine.runtime.detweights import det_state_dict
from avatar_engine.serving.worker import run_job
from avatar_engine.stages.restore.nets import gfpgan_v14
from avatar_engine.stages.restore.stage import enhance_frames, gfpgan_checkpoint, load_restorer_model
from tests.support.media import probe_mp4, tone, wav_bytes


@pytest.fixture(scope="module")
def gfpgan_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "gfpgan").mkdir()
    torch.save({"params_ema": det_state_dict(gfpgan_v14())}, root / "gfpgan" / "GFPGANv1.4.pth")
    return root


def _job(portrait_png, seconds=0.4, **extra):
    audio = wav_bytes(tone(seconds, 16000), 16000)
    return {"input": {"image_b64": base64.b64encode(portrait_png).decode(), "audio_b64": base64.b64encode(audio).decode(),
                      "fps": 10, "size": 256, "output": {"delivery": "base64"}, **extra}}


def test_enhance_without_checkpoint_is_a_clear_error(settings, portrait_png):
    error = parse_error(run_job(_job(portrait_png, enhance=True), settings=settings)["error"])
    assert error["code"] == "engine_unavailable" and "GFPGANv1.4.pth" in error["message"]
    assert gfpgan_checkpoint(settings) is None


@pytest.mark.slow
def test_still_portrait_restores_without_flicker(settings, gfpgan_root, portrait_png):
    from avatar_engine.media.image import decode_image, fit_image

    model = load_restorer_model(settings.model_copy(update={"model_root": gfpgan_root}))
    frame = fit_image(decode_image(portrait_png, max_pixels=10 ** 8), 256)
    out = list(enhance_frames(itertools.repeat(frame, 3), model, weight=1.0))
    assert all(o.shape == frame.shape and o.dtype == np.uint8 for o in out)
    assert not np.array_equal(out[0], frame)  # the face was restored (det weights: garish, but changed)
    assert np.array_equal(frame[:20, :20], out[0][:20, :20])  # the background was not
    flicker = max(np.abs(a.astype(int) - b).mean() for a, b in zip(out, out[1:]))
    assert flicker == 0.0
    half = next(enhance_frames([frame], model, weight=0.0))
    assert np.array_equal(half, frame)


@pytest.mark.slow
def test_end_to_end_enhanced_render(settings, gfpgan_root, portrait_png):
    settings = settings.model_copy(update={"model_root": gfpgan_root})
    result = run_job(_job(portrait_png, enhance=True, engine="still"), settings=settings)
    assert "error" not in result, result
    assert result["enhanced"] is True and result["frames"] == 4
    info = probe_mp4(base64.b64decode(result["video_b64"]))
    assert info["frames"] == 4 and (info["width"], info["height"]) == (256, 256)


def test_truncated_gfpgan_checkpoint(settings, tmp_path, portrait_png):
    (tmp_path / "gfpgan").mkdir()
    (tmp_path / "gfpgan" / "GFPGANv1.4.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(AvatarError) as err:
        load_restorer_model(settings.model_copy(update={"model_root": tmp_path}))
    assert err.value.code == "engine_unavailable" and "GFPGANv1.4.pth" in err.value.message


@pytest.mark.slow
def test_high_quality_mode_enhances_when_gfpgan_is_mounted(settings, gfpgan_root, portrait_png):
    mounted = settings.model_copy(update={"model_root": gfpgan_root})
    result = run_job(_job(portrait_png, seconds=0.25, engine="still", quality_mode="high_quality"), settings=mounted)
    assert result.get("enhanced") is True, result
    plain = run_job(_job(portrait_png, seconds=0.25, engine="still", quality_mode="high_quality", enhance=False),
                    settings=mounted)
    assert "enhanced" not in plain
    unmounted = run_job(_job(portrait_png, seconds=0.25, engine="still", quality_mode="high_quality"), settings=settings)
    assert "error" not in unmounted and "enhanced" not in unmounted


def test_wrong_gfpgan_ckpt_renders_high_quality_with_a_warning(settings, portrait_png, tmp_path, caplog):
    bad = settings.model_copy(update={"gfpgan_ckpt": tmp_path / "nonexistent" / "x.pth"})
    result = run_job(_job(portrait_png, seconds=0.25, engine="still", quality_mode="high_quality"), settings=bad)
    assert "error" not in result and "enhanced" not in result, result
    assert any("GFPGAN_CKPT" in w and "does not exist" in w for w in result["warnings"])
    asked = parse_error(run_job(_job(portrait_png, engine="still", enhance=True), settings=bad)["error"])
    assert asked["code"] == "engine_unavailable" and "GFPGAN_CKPT" in asked["message"]

    from avatar_engine.runtime.checkpoints import report_bad_explicit_paths

    caplog.clear()  # only what report_bad_explicit_paths logs (runpod's import can make the jobs' INFO lines visible)
    with caplog.at_level("WARNING"):
        report_bad_explicit_paths(bad)
    assert sum("GFPGAN_CKPT" in r.getMessage() for r in caplog.records) == 1
