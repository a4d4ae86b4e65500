"""The `wav2lip` engine: checkpoint discovery, auto order, fallback on a broken file, and renders that
keep the parametric engine's frames everywhere but the lower face."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_engine.audio.io import decode_audio
from avatar_engine.engines import ENGINES, candidates, list_engines
from avatar_engine.engines.base import RenderJob
from avatar_engine.engines.wav2lip.engine import load_model
from avatar_engine.engines.wav2lip.lips import UPSTREAM_PADS
from avatar_engine.engines.wav2lip.nets import Wav2Lip
from avatar_engine.errors import AvatarError, parse_error
from avatar_engine.face.blend import face_box_from_landmarks, motion_boxes
from avatar_engine.media.image import decode_image, fit_image
from avatar_engine.runtime.detweights import det_state_dict
from avatar_engine.schema import parse_request
from avatar_engine.serving.worker import run_job
from tests.support.media import probe_mp4

_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    """MODEL_ROOT holding a deterministic-weight wav2lip_gan.pth in the upstream training layout."""
    root = tmp_path_factory.mktemp("models")
    (root / "wav2lip").mkdir()
    state = {"module." + k: v for k, v in det_state_dict(Wav2Lip()).items()}
    torch.save({"state_dict": state, "optimizer": None, "global_step": 0, "global_epoch": 0},
               root / "wav2lip" / "wav2lip_gan.pth")
    return root


@pytest.fixture(scope="module")
def broken_root(tmp_path_factory, model_root) -> Path:
    """MODEL_ROOT whose checkpoint was cut off half way, as an interrupted download leaves it."""
    root = tmp_path_factory.mktemp("broken-models")
    (root / "wav2lip").mkdir()
    good = (model_root / "wav2lip" / "wav2lip_gan.pth").read_bytes()
    (root / "wav2lip" / "wav2lip_gan.pth").write_bytes(good[: len(good) // 2])
    return root


@pytest.fixture
def with_model(settings, model_root):
    return settings.model_copy(update={"model_root": model_root})


def _input(portrait_png, short_wav, **options) -> dict:
    return {"input": {"image_b64": b64(portrait_png), "audio_b64": b64(short_wav), "size": 256,
                      "output": {"delivery": "base64"}, **options}}


def _job(settings, portrait_png, short_wav, n_frames, **options) -> RenderJob:
    req = parse_request({"size": 256, **options}, local=True)
    source = decode_image(portrait_png, max_pixels=10 ** 8)
    image = fit_image(source, req.size)
    audio = decode_audio(short_wav, max_seconds=300, min_seconds=0.2)
    return RenderJob(request=req, image=image, audio=audio, fps=25, n_frames=n_frames, settings=settings,
                     source_scale=max(source.shape[:2]) / max(image.shape[:2]))


def test_auto_prefers_wav2lip_when_its_checkpoint_is_mounted(with_model, model_root):
    assert candidates("auto", with_model)[0].name == "wav2lip"
    listed = list_engines(with_model)["wav2lip"]
    assert listed["available"] and listed["checkpoints"] == {"wav2lip": str(model_root / "wav2lip" / "wav2lip_gan.pth")}


def test_checkpoint_discovery_order(settings, tmp_path):
    root = tmp_path / "models"
    (root / "wav2lip").mkdir(parents=True)
    local = settings.model_copy(update={"model_root": root})
    assert not ENGINES["wav2lip"].status(local).available
    (root / "wav2lip" / "wav2lip.pth").touch()
    assert ENGINES["wav2lip"].status(local).checkpoints["wav2lip"].endswith("wav2lip.pth")
    (root / "wav2lip" / "wav2lip_gan.pth").touch()
    assert ENGINES["wav2lip"].status(local).checkpoints["wav2lip"].endswith("wav2lip_gan.pth")
    explicit = tmp_path / "elsewhere.pth"
    st = ENGINES["wav2lip"].status(local.model_copy(update={"wav2lip_ckpt": explicit}))
    assert not st.available and str(explicit) in st.reason  # a wrong WAV2LIP_CKPT is not papered over
    explicit.touch()
    st = ENGINES["wav2lip"].status(local.model_copy(update={"wav2lip_ckpt": explicit}))
    assert st.checkpoints == {"wav2lip": str(explicit)}


def test_missing_checkpoint_named_when_requested(settings, portrait_png, short_wav):
    error = parse_error(run_job(_input(portrait_png, short_wav, engine="wav2lip"), settings=settings)["error"])
    assert error["code"] == "engine_unavailable"
    # the file is named, the worker's folders are not (docs/SECURITY.md: errors carry no worker paths)
    assert "wav2lip_gan.pth" in error["message"] and str(settings.model_root) not in error["message"]


def test_model_loads_once_per_file_version(model_root):
    path = model_root / "wav2lip" / "wav2lip_gan.pth"
    model, device = load_model(path)
    assert load_model(path)[0] is model and device.type == _DEVICE
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_model(path)[0] is not model  # a replaced checkpoint is picked up


def test_face_box_outside_the_image_is_invalid(with_model, portrait_png, short_wav):
    for box in ([200, 300, 10, 60], [60, 40, 10, 60], [0, 8, 0, 8]):
        result = run_job(_input(portrait_png, short_wav, engine="wav2lip", face_box=box), settings=with_model)
        error = parse_error(result["error"])
        assert error["code"] == "invalid_input" and "face_box" in error["message"], (box, error)


@pytest.mark.slow
def test_truncated_checkpoint_falls_back_or_is_named(settings, broken_root, portrait_png, short_wav):
    broken = settings.model_copy(update={"model_root": broken_root})
    path = "wav2lip_gan.pth"  # named without the worker's folders (docs/SECURITY.md)
    result = run_job(_input(portrait_png, short_wav), settings=broken)
    assert "error" not in result, result
    assert result["engine"] == "parametric"
    [failure] = result["fallback_from"]
    assert failure["engine"] == "wav2lip" and failure["code"] == "engine_unavailable" and path in failure["message"]
    error = parse_error(run_job(_input(portrait_png, short_wav, engine="wav2lip"), settings=broken)["error"])
    assert error["code"] == "engine_unavailable" and path in error["message"]


@pytest.mark.slow
def test_end_to_end_render(with_model, portrait_png, short_wav):
    result = run_job(_input(portrait_png, short_wav), settings=with_model)
    assert "error" not in result, result
    assert result["engine"] == "wav2lip" and "fallback_from" not in result
    assert result["lip_model"] == "wav2lip_gan.pth" and result["device"] == _DEVICE
    info = probe_mp4(base64.b64decode(result["video_b64"]))
    assert (info["width"], info["height"], info["frames"]) == (256, 256, result["frames"])
    assert result["frames"] == 53  # ceil(2.107 s * 25 fps)
    assert info["audio_duration"] == pytest.approx(result["duration_s"], abs=0.05)
    assert np.abs(info["audio"]).max() > 0.01


def _padded(box, shape):
    top, bottom, left, right = UPSTREAM_PADS
    y1, y2, x1, x2 = box
    return max(0, y1 - top), min(shape[0], y2 + bottom), max(0, x1 - left), min(shape[1], x2 + right)


@pytest.mark.slow
@pytest.mark.parametrize("face_box", [None, (30, 100, 80, 145)])
def test_only_the_lower_face_changes(with_model, portrait_png, short_wav, face_box):
    """Frame for frame, the output equals the parametric motion (lips at rest) outside the face box,
    and the boxes follow the landmarks the motion actually rendered."""
    n = 20
    job = _job(with_model, portrait_png, short_wav, n, **({"face_box": list(face_box)} if face_box else {}))
    prepared = ENGINES["wav2lip"].prepare(job)
    motion = ENGINES["parametric"].motion(job, animate_mouth=False)
    expected_boxes = motion_boxes(motion, job.image.shape[:2])
    out = list(prepared.frames)
    assert len(out) == n
    assert prepared.info["lip_model"] == "wav2lip_gan.pth"
    assert prepared.info["lip_box"] == list(face_box or expected_boxes[0])
    changed = 0
    for i, (base, landmarks) in enumerate(motion.frames()):
        box = face_box or tuple(expected_boxes[i])
        if face_box is None:
            assert box == face_box_from_landmarks(landmarks, base.shape[:2])
        y1, y2, x1, x2 = _padded(box, base.shape)
        outside = np.ones(base.shape[:2], bool)
        outside[y1:y2, x1:x2] = False
        assert out[i].shape == base.shape and out[i].dtype == np.uint8
        assert np.array_equal(out[i][outside], base[outside]), i
        upper = slice(y1, y1 + (y2 - y1) * 2 // 5)  # Wav2Lip only regenerates the lower half
        assert np.array_equal(out[i][upper, x1:x2], base[upper, x1:x2]), i
        changed += not np.array_equal(out[i], base)
    assert changed == n


@pytest.mark.slow
def test_refine_lips_tracks_the_face_in_any_frames(with_model, portrait_png, short_wav):
    """SadTalker's `lip_refine`: Wav2Lip over frames it did not make, the face tracked per frame."""
    refine_lips = ENGINES["wav2lip"].refine

    job = _job(with_model, portrait_png, short_wav, 6)
    source = [np.roll(job.image, shift, axis=1) for shift in range(6)]  # a face that moves sideways
    out = list(refine_lips(iter(source), job))
    assert len(out) == 6 and all(o.shape == job.image.shape for o in out)
    assert all(not np.array_equal(o, s) for o, s in zip(out, source))  # the lower face was repainted
    assert all(np.array_equal(o[:40], s[:40]) for o, s in zip(out, source))  # the top of the frame was not


def test_refine_lips_without_checkpoint_is_named(settings, portrait_png, short_wav):
    refine_lips = ENGINES["wav2lip"].refine

    job = _job(settings, portrait_png, short_wav, 3)
    with pytest.raises(AvatarError) as err:
        refine_lips(iter([job.image] * 3), job)
    assert err.value.code == "engine_unavailable" and "wav2lip_gan.pth" in err.value.message
