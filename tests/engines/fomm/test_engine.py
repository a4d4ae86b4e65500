"""The `fomm` engine: status and wiring, the head-track conversion, the parametric lip stage, the
reference-video guards, and end-to-end renders with deterministic weights in a test-written
`vox-cpk.pth.tar` for both driving modes (audio alone; WebM and MOV reference videos made here).

Renders are tiny (0.4 s at 10 fps, 256 px): the vox-256 generator costs ~1-3 s a frame on 2 CPU cores.
"""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from avatar_engine.audio.io import decode_audio
from avatar_engine.engines import ENGINES, candidates, list_engines
from avatar_engine.engines.base import RenderJob
from avatar_engine.engines.fomm.driving import decode_driving_video
from avatar_engine.engines.fomm.engine import HeadPose, head_pose_from_track, pose_driving_keypoints, to_normalized
from avatar_engine.engines.fomm.nets import KPDetector, OcclusionAwareGenerator
from avatar_engine.engines.parametric.animation import HeadTrack
from avatar_engine.engines.parametric.lipstage import mouth_coeffs
from avatar_engine.engines.wav2lip.nets import Wav2Lip
from avatar_engine.errors import AvatarError, parse_error
from avatar_engine.face.blend import Box
from avatar_engine.face.locate import locate_face
from avatar_engine.media.image import decode_image, fit_image
from avatar_engine.runtime.detweights import det_state_dict
from avatar_engine.schema import parse_request
from avatar_engine.serving.worker import run_job
from tests.support.media import asset_bytes, probe_mp4, wav_bytes

FPS = 10


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _speech(seconds: float, start_s: float = 1.0) -> bytes:
    with wave.open(io.BytesIO(asset_bytes("speech_16k.wav"))) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    return wav_bytes(pcm[int(start_s * 16000):int((start_s + seconds) * 16000)][None], 16000)


def _portrait(size: int = 512) -> np.ndarray:
    return fit_image(decode_image(asset_bytes("astronaut_512.png"), max_pixels=10 ** 8), size)


def _video(frames: list[np.ndarray], container: str, codec: str, fps: int = FPS) -> bytes:
    """Encode RGB frames with PyAV into an in-memory file of the given container."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _moving_portrait(n: int) -> list[np.ndarray]:
    """The bundled portrait turning and sliding a little: a driving face video."""
    image = _portrait(512)
    out = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((256.0, 200.0), 2.0 * i, 1.0 + 0.01 * i)
        m[:, 2] += (3.0 * i, -2.0 * i)
        out.append(cv2.warpAffine(image, m, (512, 512), borderMode=cv2.BORDER_REPLICATE))
    return out


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    """MODEL_ROOT with det-weight FOMM (`Logger.save_cpk` layout) and Wav2Lip checkpoints, in separate
    roots so a test picks whether Wav2Lip is mounted."""
    root = tmp_path_factory.mktemp("fomm-models")
    (root / "fomm").mkdir()
    torch.save({"kp_detector": det_state_dict(KPDetector()), "generator": det_state_dict(OcclusionAwareGenerator()),
                "discriminator": {}, "optimizer_generator": {}, "optimizer_kp_detector": {}, "epoch": 1},
               root / "fomm" / "vox-cpk.pth.tar")
    return root


@pytest.fixture(scope="module")
def wav2lip_root(tmp_path_factory, model_root) -> Path:
    root = tmp_path_factory.mktemp("fomm-wav2lip-models")
    (root / "fomm").mkdir()
    (root / "fomm" / "vox-cpk.pth.tar").symlink_to(model_root / "fomm" / "vox-cpk.pth.tar")
    (root / "wav2lip").mkdir()
    state = {"module." + k: v for k, v in det_state_dict(Wav2Lip()).items()}
    torch.save({"state_dict": state}, root / "wav2lip" / "wav2lip.pth")
    return root


@pytest.fixture
def with_fomm(settings, model_root):
    return settings.model_copy(update={"model_root": model_root})


def _payload(**options) -> dict:
    return {"image_b64": _b64(asset_bytes("astronaut_512.png")), "audio_b64": _b64(_speech(0.4)), "engine": "fomm",
            "fps": FPS, "size": 256, "seed": 1, "cache": False, "output": {"delivery": "base64"}, **options}


# ------------------------------------------------------------------ status and wiring


def test_status_names_the_checkpoint_and_auto_skips_fomm_on_cpu(settings, with_fomm, model_root):
    engine = ENGINES["fomm"]
    st = engine.status(settings)
    assert not st.available and "vox-cpk.pth.tar" in st.reason and "FOMM_CKPT" in st.reason
    st = engine.status(with_fomm)
    assert st.available and st.checkpoints == {"fomm": str(model_root / "fomm" / "vox-cpk.pth.tar")}
    assert list_engines(with_fomm)["fomm"]["available"]
    assert engine.suits_auto(with_fomm) == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "fomm" not in [e.name for e in candidates("auto", with_fomm)]
    adv = settings.model_copy(update={"fomm_ckpt": model_root / "fomm" / "vox-adv-cpk.pth.tar"})
    assert "FOMM_CKPT" in engine.status(adv).reason  # a wrong explicit path is reported, not replaced


def test_lip_stage_is_the_first_available_one(settings, with_fomm, wav2lip_root):
    engine = ENGINES["fomm"]
    assert engine.lip_stage(with_fomm).name == "parametric"  # no Wav2Lip checkpoint: the embedded repaint
    assert engine.lip_stage(settings.model_copy(update={"model_root": wav2lip_root})).name == "wav2lip"
    assert engine.lip_stage(with_fomm, "parametric").name == "parametric"
    for wanted, needle in (("wav2lip", "Wav2Lip checkpoint"), ("diff2lip", "Diff2Lip checkpoint")):
        with pytest.raises(AvatarError) as err:
            engine.lip_stage(with_fomm, wanted)
        assert err.value.code == "engine_unavailable" and needle in err.value.message, err.value.message
    error = parse_error(run_job({"input": _payload(fomm={"lips": "wav2lip"})}, settings=with_fomm)["error"])
    assert error["code"] == "engine_unavailable" and "fomm.lips" in error["message"]


def test_missing_checkpoint_is_named_when_fomm_is_requested(settings):
    error = parse_error(run_job({"input": _payload()}, settings=settings)["error"])
    assert error["code"] == "engine_unavailable" and "vox-cpk.pth.tar" in error["message"]


def test_reference_video_fields_are_validated(with_fomm):
    for extra, needle in (({"reference_video_url": "https://example.com/a.mp4", "reference_video_b64": "AAAA"},
                           "not both"),
                          ({"reference_video_b64": "AAAA", "engine": "wav2lip"}, "'fomm' engine only"),
                          ({"fomm": {"relative": True, "bogus": 1}}, "bogus")):
        error = parse_error(run_job({"input": {**_payload(), **extra}}, settings=with_fomm)["error"])
        assert error["code"] == "invalid_input" and needle in error["message"], error


def test_reference_video_cap_and_no_face(with_fomm):
    small = with_fomm.model_copy(update={"max_video_bytes": 100})
    error = parse_error(run_job({"input": _payload(reference_video_b64=_b64(b"\0" * 1000))}, settings=small)["error"])
    assert error["code"] == "input_too_large" and "reference_video_b64" in error["message"]

    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(3)]
    result = run_job({"input": _payload(reference_video_b64=_b64(_video(noise, "webm", "libvpx")))},
                     settings=with_fomm)
    error = parse_error(result["error"])
    assert error["code"] == "no_face" and "reference video" in error["message"]

    error = parse_error(run_job({"input": _payload(reference_video_b64=_b64(b"not a video" * 10))},
                                settings=with_fomm)["error"])
    assert error["code"] == "unsupported_media" and "driving video" in error["message"]


def test_decoding_stops_at_the_audio_length():
    frames = _moving_portrait(6)
    clip = decode_driving_video(_video(frames, "mov", "mpeg4"), FPS, size=None, stop_after=4)
    assert len(clip.frames) == 4


# ------------------------------------------------------------------ audio-driven head pose


def test_pixel_to_crop_coordinates():
    box = Box.square(100, 50, 200)  # 200 px square -> 256 px crop
    corners = np.array([[100 + 0.5 * 200 / 256 - 0.5, 50 + 0.5 * 200 / 256 - 0.5],  # centre of crop pixel 0
                        [300 - 0.5 * 200 / 256 - 0.5, 250 - 0.5 * 200 / 256 - 0.5]])  # centre of crop pixel 255
    np.testing.assert_allclose(to_normalized(corners, box), [[-1, -1], [1, 1]], atol=1e-12)


def test_head_track_moves_the_source_keypoints_rigidly():
    image = _portrait(512)
    points, _ = locate_face(image)
    box = Box.square(120, 40, 260)
    n = 3
    head = HeadTrack(roll_deg=np.array([0.0, 3.0, 0.0]), tx=np.array([0.0, 0.0, 0.02]), ty=np.zeros(n),
                     scale=np.array([0.0, 0.0, 0.01]))
    pose = head_pose_from_track(head, points, box)
    assert isinstance(pose, HeadPose) and pose.translation.shape == (n, 2) and np.all(np.abs(pose.center) < 1)
    # tx in face heights along the face's right axis -> crop units: 0.02 face heights of a ~190 px face
    face_h = float(np.linalg.norm(points[152, :2] - points[10, :2]))
    assert abs(np.linalg.norm(pose.translation[2]) - 0.02 * face_h * 2 * 256 / (260 * 255)) < 1e-9

    g = torch.Generator().manual_seed(0)
    kp = {"value": torch.rand(1, 10, 2, generator=g, dtype=torch.float64) - 0.5,
          "jacobian": torch.eye(2, dtype=torch.float64).repeat(1, 10, 1, 1) + 0.1}
    out = pose_driving_keypoints(kp, pose)
    assert torch.equal(out["value"][0], kp["value"][0]) and torch.equal(out["jacobian"][0], kp["jacobian"][0])
    # frame 1: a 3 degree clockwise roll about the head centre, applied to values and Jacobians alike
    c = torch.from_numpy(pose.center)
    a = np.deg2rad(3.0)
    rot = torch.tensor([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=torch.float64)
    torch.testing.assert_close(out["value"][1], (kp["value"][0] - c) @ rot.T + c, rtol=0, atol=1e-12)
    torch.testing.assert_close(out["jacobian"][1], rot @ kp["jacobian"][0], rtol=0, atol=1e-12)
    # frame 2: scaled by 1.01 about the centre and shifted
    t = torch.from_numpy(pose.translation[2])
    torch.testing.assert_close(out["value"][2], (kp["value"][0] - c) * 1.01 + c + t, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ the parametric lip stage


def test_parametric_refine_repaints_only_the_mouth(settings):
    req = parse_request({"size": 512, "fps": FPS, "lipsync": "signal"}, local=True)
    image = _portrait(512)
    audio = decode_audio(_speech(0.6), max_seconds=300, min_seconds=0.2)
    job = RenderJob(request=req, image=image, audio=audio, fps=FPS, n_frames=6, settings=settings)
    blank = np.full_like(image, 90)
    frames = [blank] + [image] * 5
    out = list(ENGINES["parametric"].refine(iter(frames), job))
    assert len(out) == 6 and np.array_equal(out[0], blank)  # no face tracked (yet): passed through
    out = out[1:]
    points, _ = locate_face(image)
    pad = 0.25 * float(np.linalg.norm(points[152, :2] - points[10, :2]))  # the rig's reach past the mesh
    fx0, fy0 = np.floor(points[:, :2].min(0) - pad).astype(int)
    fx1, fy1 = np.ceil(points[:, :2].max(0) + pad).astype(int)
    nose_y = int(points[1, 1])  # nose tip
    mouth = points[[61, 291, 0, 17], :2]
    x0, y0 = np.floor(mouth.min(0)).astype(int)
    x1, y1 = np.ceil(mouth.max(0)).astype(int)
    from avatar_engine.speech.mouth import mouth_track

    track = mouth_track(audio.analysis, 6, FPS, lipsync="signal")
    opened = [i for i in range(5) if mouth_coeffs(track, i + 1)["open"] > 0.2]
    assert opened, track.open
    for i in range(5):
        diff = np.abs(out[i].astype(int) - image.astype(int)).max(axis=2)
        outside = diff.copy()
        outside[fy0:fy1, fx0:fx1] = 0
        assert outside.max() <= 2, i  # nothing away from the face changes
        assert diff[fy0:nose_y, fx0:fx1].mean() < 1.0, i  # the upper face barely (the mesh fit's spread)
        if i in opened:
            assert diff[y0:y1, x0:x1].mean() > 8, i  # an open mouth was painted


# ------------------------------------------------------------------ end to end (det weights)


def _check_render(result: dict, frames: int) -> None:
    assert "error" not in result, result.get("error")
    assert result["engine"] == "fomm" and "fallback_from" not in result
    assert result["frames"] == frames and len(result["crop_box"]) == 4 and result["device"] in ("cpu", "cuda")
    info = probe_mp4(base64.b64decode(result["video_b64"]))
    assert info["frames"] == frames and (info["width"], info["height"]) == (256, 256) and info["fps"] == FPS


@pytest.mark.slow
def test_audio_driven_render(with_fomm):
    result = run_job({"id": "fomm-audio", "input": _payload()}, settings=with_fomm)
    _check_render(result, 4)
    assert result["driving"] == "audio" and result["lip_stage"] == "parametric"
    assert result["fomm_model"] == "vox-cpk.pth.tar"


@pytest.mark.slow
def test_webm_reference_video_loops_pingpong(with_fomm):
    video = _video(_moving_portrait(3), "webm", "libvpx")  # 0.3 s for 0.4 s of audio
    result = run_job({"id": "fomm-webm", "input": _payload(reference_video_b64=_b64(video))}, settings=with_fomm)
    _check_render(result, 4)
    assert result["driving"] == "video" and result["reference_frames"] == 3
    assert result["reference_loop"] == "pingpong" and result["lip_stage"] == "parametric"
    left, top, right, bottom = result["reference_box"]
    assert right - left == bottom - top > 64  # a square around the face of the 512 px driving frames


@pytest.mark.slow
def test_mov_reference_video_with_wav2lip_lips(settings, wav2lip_root, monkeypatch):
    """Keypoints of the driving video come from the det-weight detector; the generator is replaced by the
    identity (the source crop), because det-weight faces are no faces to the lip stage's face tracker."""
    from avatar_engine.engines.fomm import engine as fomm_engine

    def identity_batch(nets, device, encoding, kp_source, kp_driving, cpu_bf16=False):
        n = kp_driving["value"].shape[0]
        crop = (encoding.image[0].permute(1, 2, 0).float().cpu().numpy() * 255 + 0.5).astype(np.uint8)
        return np.repeat(crop[None], n, axis=0)

    monkeypatch.setattr(fomm_engine, "render_batch", identity_batch)
    video = _video(_moving_portrait(6), "mov", "mpeg4")  # longer than the audio: cut at its end
    local = settings.model_copy(update={"model_root": wav2lip_root})
    payload = _payload(reference_video_b64=_b64(video), fomm={"relative": True, "adapt_scale": False})
    result = run_job({"id": "fomm-mov", "input": payload}, settings=local)
    _check_render(result, 4)
    assert result["driving"] == "video" and result["reference_frames"] == 4 and result["reference_loop"] is None
    assert result["lip_stage"] == "wav2lip"


@pytest.mark.slow
def test_prepare_changes_only_the_crop_and_moves_with_the_head_track(with_fomm, monkeypatch):
    """Without a lip stage the frames are the generator's faces pasted into the portrait: outside the crop
    box every pixel is the portrait's. Det-weight faces hardly depend on the keypoints (the output is a
    sigmoid near 0.5, std ~0.003), so the head track is checked on the driving keypoints each batch gets."""
    from avatar_engine.engines.fomm import FommEngine
    from avatar_engine.engines.fomm import engine as fomm_engine

    seen = []
    original = fomm_engine.render_batch

    def recording_batch(nets, device, encoding, kp_source, kp_driving, cpu_bf16=False):
        seen.append(kp_driving["value"].clone())
        return original(nets, device, encoding, kp_source, kp_driving, cpu_bf16)

    monkeypatch.setattr(fomm_engine, "render_batch", recording_batch)
    req = parse_request({"engine": "fomm", "size": 256, "fps": FPS, "seed": 2}, local=True)
    image = fit_image(decode_image(asset_bytes("astronaut_512.png"), max_pixels=10 ** 8), 256)
    audio = decode_audio(_speech(0.6), max_seconds=300, min_seconds=0.2)
    job = RenderJob(request=req, image=image, audio=audio, fps=FPS, n_frames=6, settings=with_fomm,
                    source_scale=2.0)
    prepared = FommEngine(motion=ENGINES["parametric"], lips=[]).prepare(job)
    assert prepared.info["lip_stage"] is None and prepared.info["driving"] == "audio"
    x0, y0, x1, y1 = prepared.info["crop_box"]
    frames = list(prepared.frames)
    bs = prepared.info["batch_size"]
    assert len(frames) == 6 and [len(v) for v in seen] == [min(bs, 6 - i) for i in range(0, 6, bs)]
    for frame in frames:
        assert not np.array_equal(frame, image)  # the face was replaced...
        outside = frame.copy()
        outside[max(y0, 0):y1, max(x0, 0):x1] = image[max(y0, 0):y1, max(x0, 0):x1]
        assert np.array_equal(outside, image)  # ...and nothing outside the crop box
    values = torch.cat(seen)
    assert float((values[1:] - values[:-1]).abs().amax()) > 1e-4  # the head moves from frame to frame


def test_cli_reference_video_reaches_fomm(model_root, tmp_path, monkeypatch, capsys):
    """`--reference-video` is the driving video of the render (#22 item 7): FOMM loads it, not the audio track."""
    from avatar_engine.cli import main
    from avatar_engine.engines.fomm import engine as fomm_engine
    from avatar_engine.settings import get_settings

    seen = []

    def loaded(job):
        seen.append(job.reference_video)
        raise AvatarError("no_face", "sentinel: the reference video reached FOMM")

    monkeypatch.setattr(fomm_engine, "load_reference_video", loaded)
    monkeypatch.setenv("MODEL_ROOT", str(model_root))
    get_settings.cache_clear()
    try:
        video = _video(_moving_portrait(3), "mov", "mpeg4")
        (tmp_path / "drive.mov").write_bytes(video)
        (tmp_path / "speech.wav").write_bytes(_speech(0.4))
        code = main(["render", "--face", _asset_file(tmp_path), "--audio", str(tmp_path / "speech.wav"),
                     "--reference-video", str(tmp_path / "drive.mov"), "--out", str(tmp_path / "o.mp4"),
                     "--fps", str(FPS), "--size", "256"])
    finally:
        get_settings.cache_clear()
    assert code == 1 and seen == [video] and "sentinel" in capsys.readouterr().err


def _asset_file(tmp_path: Path) -> str:
    path = tmp_path / "face.png"
    path.write_bytes(asset_bytes("astronaut_512.png"))
    return str(path)
