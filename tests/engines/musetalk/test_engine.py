"""The `musetalk` engine: status and wiring, the license policy, the lip stage on a small det-weight MuseTalk
written as upstream's tree, and end-to-end renders through the worker: `engine: "musetalk"` (over the
embedded engine's motion) and as SadTalker's lip stage (its frames stubbed: SadTalker's own renders are
tested in tests/engines/sadtalker)."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest

from avatar_engine.engines import ENGINES, list_engines, select_chain
from avatar_engine.engines.musetalk import geometry
from avatar_engine.engines.musetalk.engine import CPU_WARNING
from avatar_engine.errors import AvatarError, parse_error
from avatar_engine.face.locate import locate_face
from avatar_engine.serving.worker import run_job
from tests.support.media import asset_bytes, probe_mp4, wav_bytes

FPS = 10
SECONDS = 0.3


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _speech(seconds: float, start_s: float = 1.0) -> np.ndarray:
    with wave.open(io.BytesIO(asset_bytes("speech_16k.wav"))) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    return pcm[int(start_s * 16000):int((start_s + seconds) * 16000)]


def _payload(**options) -> dict:
    return {"image_b64": _b64(asset_bytes("astronaut_512.png")), "audio_b64": _b64(wav_bytes(_speech(SECONDS)[None],
                                                                                          16000)),
            "fps": FPS, "size": 256, "seed": 3, "cache": False, "output": {"delivery": "base64"}, **options}


@pytest.fixture
def mt_settings(settings, tiny_root):
    return settings.model_copy(update={"model_root": tiny_root})


def test_status_names_the_missing_files(settings):
    st = ENGINES["musetalk"].status(settings)
    assert not st.available and "musetalkV15/musetalk.json" in st.reason and "MODEL_ROOT/musetalk" in st.reason
    result = run_job({"input": _payload(engine="musetalk")}, settings=settings)
    assert parse_error(result["error"])["code"] == "engine_unavailable"


def test_status_and_cpu_auto(settings, tmp_path):
    from avatar_engine.engines.musetalk.layout import MuseTalkFiles

    for path in MuseTalkFiles(tmp_path / "musetalk").required():  # status looks at files only, never loads
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")
    mounted = settings.model_copy(update={"model_root": tmp_path})
    assert ENGINES["musetalk"].status(mounted).available
    assert list_engines(mounted)["musetalk"]["available"]
    assert not ENGINES["musetalk"].suits_auto(mounted)  # CPU: only when asked for
    assert all("musetalk" not in plan.stages for plan in select_chain("auto", "real_time", mounted).plans)
    moved = settings.model_copy(update={"musetalk_dir": tmp_path / "musetalk"})
    assert ENGINES["musetalk"].status(moved).available
    from avatar_engine.runtime.inventory import checkpoint_path, component_report

    assert checkpoint_path("musetalk_unet", moved) == tmp_path / "musetalk" / "musetalkV15" / "unet.pth"
    assert component_report("engines", "musetalk", mounted)["missing"] == []  # the manifest knows every file


def test_commercial_policy_blocks_non_commercial_engines(settings):
    commercial = settings.model_copy(update={"model_licenses": "commercial"})
    for name in ("wav2lip", "diff2lip"):
        st = ENGINES[name].status(commercial)
        assert not st.available and "MODEL_LICENSES=commercial" in st.reason and "commercial" in st.reason
        with pytest.raises(AvatarError) as err:
            select_chain(name, "auto", commercial)
        assert err.value.code == "engine_unavailable" and "license" in err.value.message
    result = run_job({"input": _payload(engine="wav2lip")}, settings=commercial)
    err = parse_error(result["error"])
    assert err["code"] == "engine_unavailable" and "non-commercial" in err["message"]


def test_commercial_policy_lists_only_commercial_models(settings):
    from avatar_engine.runtime.inventory import license_policy

    commercial = settings.model_copy(update={"model_licenses": "commercial"})
    policy = license_policy(commercial)
    assert policy["policy"] == "commercial"
    assert not policy["engines"]["wav2lip"]["allowed"] and policy["engines"]["musetalk"]["allowed"]
    result = run_job({"input": _payload()}, settings=commercial)
    assert "error" not in result, result.get("error")
    assert result["models"] and all(m["commercial_use"] for m in result["models"])
    assert [m["name"] for m in result["models"]] == result["chain"]


@pytest.mark.slow
def test_render_alone_over_the_embedded_motion(mt_settings):
    commercial = mt_settings.model_copy(update={"model_licenses": "commercial"})
    result = run_job({"id": "mt1", "input": _payload(engine="musetalk", musetalk={"extra_margin": 12})},
                     settings=commercial)
    assert "error" not in result, result.get("error")
    assert result["engine"] == "musetalk" and result["chain"] == ["musetalk"] and "fallback_from" not in result
    assert result["lip_model"] == "musetalkV15" and result["device"] == "cpu"
    assert CPU_WARNING in result.get("warnings", [])
    assert [m["name"] for m in result["models"]] == ["musetalk"] and result["models"][0]["commercial_use"]
    info = probe_mp4(base64.b64decode(result["video_b64"]))
    assert info["frames"] == 3 and (info["width"], info["height"]) == (256, 256)


@pytest.mark.slow
def test_lip_stage_over_sadtalker_frames(mt_settings, monkeypatch):
    """SadTalker's `lip_refine` with MuseTalk: under the commercial policy `auto` cannot take Wav2Lip."""
    from avatar_engine.engines.sadtalker import engine as st

    commercial = mt_settings.model_copy(update={"model_licenses": "commercial"})
    sadtalker = ENGINES["sadtalker"]
    assert sadtalker._lip_stage(commercial, "auto").name == "musetalk"
    with pytest.raises(AvatarError) as err:
        sadtalker._lip_stage(commercial, "wav2lip")
    assert err.value.code == "engine_unavailable" and "license" in err.value.message
    frames = [np.roll(np.asarray(_portrait(256)), shift, axis=1) for shift in (0, 2, 4)]
    job = _job(commercial, len(frames))
    out = list(ENGINES["musetalk"].refine(iter(frames), job))
    assert len(out) == 3 and all(o.shape == frames[0].shape for o in out)
    changed = [np.abs(o.astype(int) - f.astype(int)).sum(axis=2) > 0 for o, f in zip(out, frames)]
    ys, xs = np.nonzero(changed[0])
    points, _ = locate_face(job.image, job.source_scale)
    box = geometry.mesh_crop_box(points, job.image.shape[:2])
    crop, s = geometry.expanded_box(box)
    k = geometry.blur_kernel(2 * s, 0.05)
    assert len(ys) and ys.min() >= crop[1] + s - k // 2 and ys.max() < box[3]  # the jaw only: upper half cut
    assert xs.min() >= box[0] - k // 2 and xs.max() < box[2] + k // 2
    assert st.SadTalkerEngine  # the wiring itself: the registry hands SadTalker [musetalk, wav2lip]
    assert [x.name for x in sadtalker._lips] == ["musetalk", "wav2lip"]


def _portrait(size: int):
    from avatar_engine.media.image import decode_image, fit_image

    return fit_image(decode_image(asset_bytes("astronaut_512.png"), max_pixels=10**7), size)


def _job(settings, n_frames: int):
    from avatar_engine.audio.io import AudioClip
    from avatar_engine.engines.base import RenderJob
    from avatar_engine.schema import parse_request

    pcm = _speech(n_frames / FPS)
    request = parse_request({"engine": "sadtalker", "fps": FPS, "size": 256, "seed": 3}, local=True)
    audio = AudioClip(analysis=pcm, samples=pcm[None], rate=16000, duration_s=len(pcm) / 16000)
    return RenderJob(request=request, image=np.asarray(_portrait(256)), audio=audio, fps=FPS, n_frames=n_frames,
                     settings=settings, source_scale=2.0)
