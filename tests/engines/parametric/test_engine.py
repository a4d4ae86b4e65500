"""The embedded engine, judged from its output: sync, closed mouth in silence, blinks, head motion."""

import io

import numpy as np
import pytest
from PIL import Image

from avatar_engine.audio.io import decode_audio
from avatar_engine.engines import ENGINES, candidates
from avatar_engine.engines.base import RenderJob
from avatar_engine.errors import AvatarError
from avatar_engine.media.image import decode_image, fit_image
from avatar_engine.media.sync_check import sync_check, sync_offset, track_face
from avatar_engine.pipeline import LocalInputs, render
from avatar_engine.schema import parse_request
from avatar_engine.speech.mouth import mouth_track
from avatar_engine.speech.phonemes import Phone
from avatar_engine.speech.visemes import viseme_track
from tests.support.media import tone, wav_bytes

pytestmark = pytest.mark.slow


def _render(settings, tmp_path, image, audio, name, **options):
    req = parse_request({"output": {"delivery": "path"}, **options}, local=True)
    out = tmp_path / f"{name}.mp4"
    result = render(req, settings=settings, local=LocalInputs(image=image, audio=audio), out_path=str(out))
    return result, out


@pytest.fixture(scope="module")
def renders(tmp_path_factory, portrait_png, speech_wav):
    from avatar_engine.settings import Settings

    tmp = tmp_path_factory.mktemp("renders")
    settings = Settings(output_dir=tmp, model_root=tmp / "none")
    silence = wav_bytes(np.zeros((1, 16000 * 3), np.float32), 16000)
    return {
        "phonemes": _render(settings, tmp, portrait_png, speech_wav, "phonemes", qa=True, seed=3),
        "signal": _render(settings, tmp, portrait_png, speech_wav, "signal", qa=True, lipsync="signal", seed=3),
        "still": _render(settings, tmp, portrait_png, speech_wav, "still", still=True, lipsync="signal", seed=3),
        "silence": _render(settings, tmp, portrait_png, silence, "silence", seed=5),
    }


@pytest.fixture(scope="module")
def tracks(renders):
    return {k: track_face(out, eyes=(k == "phonemes")) for k, (_, out) in renders.items()}


@pytest.mark.parametrize("kind", ["phonemes", "signal"])
def test_sync_self_check(renders, kind):
    result, _ = renders[kind]
    assert result["engine"] == "parametric" and result["lipsync"] == kind
    assert abs(result["sync"]["offset_ms"]) <= 40, result["sync"]
    assert result["sync"]["confidence"] >= 0.6, result["sync"]


def test_sync_check_detects_a_shifted_mouth():
    rng = np.random.default_rng(0)
    loud = np.clip(rng.normal(size=200).cumsum() % 1.0, 0, 1)
    report = sync_offset(np.roll(loud, 4), loud, 25.0)
    assert report.offset_ms == pytest.approx(160.0) and report.confidence > 0.9


def test_silence_keeps_the_portraits_own_mouth(tracks, portrait_png):
    """No speech, no change: the smiling portrait keeps its parted lips (rest is the portrait's mouth)."""
    from avatar_engine.face.locate import locate_face
    from avatar_engine.face.regions import mouth_opening

    points, _ = locate_face(np.asarray(Image.open(io.BytesIO(portrait_png)).convert("RGB")))
    silent, speech = tracks["silence"].mouth_open, tracks["phonemes"].mouth_open
    assert abs(float(np.median(silent)) - mouth_opening(points)) < 0.012, (np.median(silent), mouth_opening(points))
    assert np.ptp(silent) < 0.25 * np.ptp(speech)  # what remains is landmark-tracking noise
    rest = float(np.median(silent))
    assert speech.max() > rest + 0.03 and speech.min() < rest - 0.015  # vowels open it, closures close it


def _lips_box_difference(mp4, image: np.ndarray, points: np.ndarray) -> float:
    import av

    from avatar_engine.face import regions as R

    lips = points[R.LIPS_OUTER_UPPER + R.LIPS_OUTER_LOWER, :2]
    (x0, y0), (x1, y1) = np.floor(lips.min(0)).astype(int), np.ceil(lips.max(0)).astype(int)
    with av.open(str(mp4)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return float(np.mean([np.abs(f[y0:y1, x0:x1].astype(np.float32) - image[y0:y1, x0:x1]).mean() for f in frames]))


def test_rest_frames_are_the_portrait_within_encode_noise(settings, tmp_path, portrait_png):
    """`still: true` and silence: inside the lips' box the embedded engine differs from the portrait no
    more than the `still` engine (the encoder's noise alone) does."""
    from avatar_engine.face.locate import locate_face

    silence = wav_bytes(np.zeros((1, 16000 * 2), np.float32), 16000)
    image = fit_image(decode_image(portrait_png, max_pixels=10 ** 8), 512)
    points, _ = locate_face(image)
    diffs = {}
    for engine in ("still", "parametric"):
        _, out = _render(settings, tmp_path, portrait_png, silence, f"rest-{engine}", engine=engine, still=True)
        diffs[engine] = _lips_box_difference(out, image, points)
    assert diffs["parametric"] <= diffs["still"] + 0.3, diffs


def test_blinks_visible(tracks):
    eyes = tracks["phonemes"].eye_open
    baseline = np.median(eyes)
    dips = np.flatnonzero(eyes < 0.75 * baseline)
    assert dips.size >= 1, (eyes.min(), baseline)
    # separate blinks are at least 2 s apart
    starts = dips[np.r_[True, np.diff(dips) > 1]]
    assert np.all(np.diff(starts) >= 2 * 25 - 2)


_RIGID = [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 109, 338, 67, 297, 103, 332, 54, 284, 21, 251, 234, 454, 93, 323]


def _head_roll_deg(points):
    """Roll of the upper face (forehead, nose, temples) against frame 0, by 2-D Procrustes:
    robust to the eye and mouth landmarks that blinks and speech move."""
    ref = points[0, _RIGID, :2] - points[0, _RIGID, :2].mean(0)
    out = []
    for p in points[:, _RIGID, :2]:
        cur = p - p.mean(0)
        out.append(np.degrees(np.arctan2((ref[:, 0] * cur[:, 1] - ref[:, 1] * cur[:, 0]).sum(), (ref * cur).sum())))
    return np.array(out)


def test_head_moves_unless_still(tracks):
    moving = _head_roll_deg(tracks["phonemes"].points)
    still = _head_roll_deg(tracks["still"].points)
    assert np.ptp(moving) > 1.5 * np.ptp(still) and np.ptp(moving) > 1.5
    assert np.abs(moving - np.median(moving)).max() <= 4.0  # <= 3 deg of roll, plus tracking noise


def test_still_keeps_the_upper_head_fixed(settings, portrait_png, short_wav):
    job = _job(settings, portrait_png, short_wav, seed=1, still=True)
    frames = list(ENGINES["parametric"].prepare(job).frames)
    forehead = slice(0, 60)  # hair and upper forehead of the bundled portrait (blinks move the brows)
    assert all(np.array_equal(f[forehead], frames[0][forehead]) for f in frames)
    moving = list(ENGINES["parametric"].prepare(_job(settings, portrait_png, short_wav, seed=1)).frames)
    assert any(not np.array_equal(f[forehead], moving[0][forehead]) for f in moving)


def _job(settings, image_png, audio_bytes, **options):
    req = parse_request(options, local=True)
    image = fit_image(decode_image(image_png, max_pixels=10 ** 8), req.size)
    audio = decode_audio(audio_bytes, max_seconds=300, min_seconds=0.2)
    return RenderJob(request=req, image=image, audio=audio, fps=25, n_frames=40, settings=settings)


def test_background_untouched_and_rotation_bounded(settings, portrait_png, short_wav):
    job = _job(settings, portrait_png, short_wav, seed=1)
    frames = list(ENGINES["parametric"].prepare(job).frames)
    assert len(frames) == 40
    for f in frames:
        assert np.array_equal(f[:40, :40], job.image[:40, :40])  # corners are background
        assert np.array_equal(f[-40:, -40:], job.image[-40:, -40:])


def test_deterministic_for_a_seed(settings, portrait_png, short_wav):
    a = list(ENGINES["parametric"].prepare(_job(settings, portrait_png, short_wav, seed=7)).frames)
    b = list(ENGINES["parametric"].prepare(_job(settings, portrait_png, short_wav, seed=7)).frames)
    c = list(ENGINES["parametric"].prepare(_job(settings, portrait_png, short_wav, seed=8)).frames)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_no_face(settings, tmp_path, short_wav):
    noise = np.random.default_rng(0).integers(90, 110, (256, 256, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    with pytest.raises(AvatarError) as err:
        _render(settings, tmp_path, buf.getvalue(), short_wav, "noface")
    assert err.value.code == "no_face"
    result, out = _render(settings, tmp_path, buf.getvalue(), short_wav, "noface2", on_no_face="still")
    assert result["engine"] == "still" and result["no_face"] is True and out.exists()


def test_face_too_small(settings, tmp_path, portrait_png, short_wav):
    thumb = io.BytesIO()
    Image.open(io.BytesIO(portrait_png)).resize((200, 200)).save(thumb, format="PNG")  # face ~37 px
    with pytest.raises(AvatarError) as err:
        _render(settings, tmp_path, thumb.getvalue(), short_wav, "small")
    assert err.value.code == "invalid_input" and "64 px" in err.value.message


def test_small_output_of_a_large_face_is_fine(settings, tmp_path, portrait_png, short_wav):
    result, out = _render(settings, tmp_path, portrait_png, short_wav, "small_out", size=128)
    assert result["engine"] == "parametric" and (result["width"], result["height"]) == (128, 128)


def test_auto_is_parametric_without_checkpoints(settings):
    assert candidates("auto", settings)[0].name == "parametric"


def test_signal_track_silence_is_closed():
    silence = np.zeros(16000 * 2, np.float32)
    track = mouth_track(silence, 50, 25, lipsync="auto")
    assert track.open.max() == 0.0


def test_signal_track_follows_loudness():
    wav = np.concatenate([tone(1.0, 16000, amp=0.5)[0], np.zeros(16000, np.float32)])
    track = mouth_track(wav, 50, 25, lipsync="signal")
    assert track.open[5:20].mean() > 0.5 and track.open[30:].max() < 0.05


def test_visemes_close_on_bilabials():
    phones = [Phone("SIL", 0.0, 0.2), Phone("AA", 0.2, 0.5), Phone("M", 0.5, 0.62), Phone("AA", 0.62, 1.0)]
    opening, _, _, closure = viseme_track(phones, 25, 25)
    m_frame = int(0.56 * 25)
    assert opening[m_frame] < 0.15 and closure[m_frame] > 0.5
    assert opening[int(0.35 * 25)] > 0.6 and opening[int(0.85 * 25)] > 0.6


def test_sync_check_on_a_still_render_is_not_confident(tmp_path, settings, portrait_png, speech_wav):
    result, out = _render(settings, tmp_path, portrait_png, speech_wav, "stillengine", engine="still")
    audio = decode_audio(speech_wav, max_seconds=300, min_seconds=0.2)
    assert sync_check(out, audio.analysis).confidence < 0.3



def test_small_face_in_a_wide_picture_is_found(settings, tmp_path, portrait_png, short_wav):
    """The full-range detector takes over when the face is small in the frame (short range misses it)."""
    canvas = Image.new("RGB", (1024, 640), (90, 120, 160))
    canvas.paste(Image.open(io.BytesIO(portrait_png)).convert("RGB").resize((600, 600)), (300, 20))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    result, _ = _render(settings, tmp_path, buf.getvalue(), short_wav, "wide")
    assert result["engine"] == "parametric" and (result["width"], result["height"]) == (512, 320)


def test_grey_portrait_gets_a_grey_mouth(portrait_png):
    from avatar_engine.engines.parametric.paint import mouth_style
    from avatar_engine.face.locate import locate_face

    grey = np.asarray(Image.open(io.BytesIO(portrait_png)).convert("L").convert("RGB"))
    points, _ = locate_face(grey)
    style = mouth_style(grey, points)
    for color in (style.cavity_deep, style.cavity_near, style.tongue, style.teeth):
        assert np.ptp(color) < 1.0
