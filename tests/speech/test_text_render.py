"""Text input end to end through `run_job`: three languages in sync, captions returned and uploaded,
transcript captions for recorded speech, and every bad text input with its code."""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import pytest

from avatar_engine.errors import parse_error
from avatar_engine.serving.worker import run_job
from avatar_engine.settings import Settings
from avatar_engine.speech.tts import speak, speak_request
from avatar_engine.storage import StoredObject
from tests.stages.test_captions import parse_srt, parse_vtt
from tests.support.media import asset_bytes, probe_mp4

FPS = 25
IMAGE = base64.b64encode(asset_bytes("astronaut_512.png")).decode()
TEXTS = {
    "en": "Hello there. I am a talking head, and my lips follow the synthesizer.",
    "de": "Guten Tag! Ich bin ein sprechender Kopf, und meine Lippen folgen der Stimme.",
    "ru": "Здравствуйте! Я говорящая голова, и мои губы следуют за голосом.",
}


@pytest.fixture
def settings(tmp_path) -> Settings:
    (tmp_path / "work").mkdir()
    return Settings(output_dir=tmp_path / "out", work_dir=tmp_path / "work", model_root=tmp_path / "models",
                    media_bucket=None)


def _job(**fields) -> dict:
    return {"input": {"image_b64": IMAGE, "engine": "parametric", "size": 256, "fps": FPS,
                      "output": {"delivery": "path"}, **fields}}


def _ok(result: dict) -> dict:
    assert "error" not in result, parse_error(result["error"])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("language", sorted(TEXTS))
def test_text_renders_in_sync_within_one_frame(settings, language, monkeypatch):
    spoken = []  # the clip the render used (eSpeak's timing varies a little from call to call)

    def recording(request, s):
        spoken.append(speak_request(request, s))
        return spoken[-1]

    monkeypatch.setattr("avatar_engine.pipeline.speak_request", recording)
    result = _ok(run_job(_job(text=TEXTS[language], language=language, qa=True, captions="srt"), settings=settings))
    assert result["lipsync"] == "synthesizer"
    assert abs(result["sync"]["offset_ms"]) <= 1000.0 / FPS
    assert result["sync"]["confidence"] > 0.5  # the mouth really moves with the voice
    info = probe_mp4(Path(result["video_path"]))
    assert info["audio_rate"] == 22050 and info["frames"] == result["frames"]
    assert abs(info["audio_duration"] - result["duration_s"]) < 0.05
    cues = parse_srt(result["captions"])
    assert " ".join(c.text for c in cues) == TEXTS[language]
    # the caption file carries exactly the synthesizer's word times (to the millisecond of the format)
    words = spoken[0].timeline.words
    assert cues[0].start_s == pytest.approx(words[0].start_s, abs=5e-4)
    assert cues[-1].end_s == pytest.approx(words[-1].end_s, abs=5e-4)
    for cue in cues:
        assert min(abs(cue.start_s - w.start_s) for w in words) <= 5e-4


class _MemoryStore:
    def __init__(self):
        self.objects: dict[str, tuple[bytes, str]] = {}

    def exists(self, name):
        return name in self.objects

    def upload(self, local_path, name, *, content_type="video/mp4", metadata=None, cache_control=None, deadline=None):
        self.objects[name] = (Path(local_path).read_bytes(), content_type)

    def link(self, name):
        return StoredObject(name=name, url=f"https://bucket.example/{name}", expires_at=None, public=True)

    def delete(self, name):
        self.objects.pop(name, None)


def test_captions_upload_beside_the_mp4(settings, monkeypatch):
    store = _MemoryStore()
    monkeypatch.setattr("avatar_engine.pipeline.get_store", lambda s: store)
    job = _job(text="Captions travel with the video.", captions="vtt", captions_burn=True, output={"delivery": "url"})
    first = _ok(run_job(job, settings=settings))
    video = first["video_url"].rsplit("/", 1)[1]
    assert first["captions_url"] == f"https://bucket.example/{video[:-4]}.vtt"
    body, content_type = store.objects[f"{video[:-4]}.vtt"]
    assert body.decode() == first["captions"] and content_type.startswith("text/vtt")
    assert [c.text for c in parse_vtt(first["captions"])] == ["Captions travel with the video."]
    # the same text again is a cache hit (keyed on text, voice and language: eSpeak's samples vary slightly)
    again = _ok(run_job(job, settings=settings))
    assert again["cached"] is True and again["video_url"] == first["video_url"]
    assert again["captions"] == first["captions"] or parse_vtt(again["captions"])


def _wav(clip) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(clip.rate)
        w.writeframes((clip.samples[0] * 32767).astype("<i2").tobytes())
    return buf.getvalue()


@pytest.mark.slow
def test_recorded_speech_with_transcript_gets_aligned_captions(settings):
    transcript = "The quick brown fox jumps over the lazy dog. Then it runs away into the forest."
    clip = speak(transcript, voice=None, language="en", settings=settings)  # known word times as ground truth
    job = _job(audio_b64=base64.b64encode(_wav(clip)).decode(), transcript=transcript, captions="srt")
    result = _ok(run_job(job, settings=settings))
    assert result["lipsync"] == "alignment"  # the alignment done for captions drives the lips too
    cues = parse_srt(result["captions"])
    assert " ".join(c.text for c in cues) == transcript
    truth = {w.text: w for w in clip.timeline.words}
    for cue in cues:
        first = truth[cue.text.split()[0]]
        assert abs(cue.start_s - first.start_s) < 0.1  # pocketsphinx's 10 ms frames, plus its silence choices


@pytest.mark.parametrize("fields,code,needle", [
    ({"text": ""}, "invalid_input", "text"),
    ({"text": "   "}, "invalid_input", "text"),
    ({"text": "x" * 41}, "input_too_large", "MAX_TEXT_CHARS"),
    ({"text": "Hi there.", "voice": "espeak:no-such-voice"}, "invalid_input", "list_voices"),
    ({"text": "Hi there.", "language": "zz"}, "invalid_input", "no eSpeak voice"),
    ({"text": "Hi there.", "audio_b64": "UklGRg=="}, "invalid_input", "audio_url or audio_b64 or text"),
    ({"audio_b64": "UklGRg==", "voice": "espeak:en-us"}, "invalid_input", "voice applies to text"),
    ({"audio_b64": "UklGRg==", "captions": "srt"}, "invalid_input", "captions need the words"),
    ({"text": "Hi there.", "captions": "ass"}, "invalid_input", "captions"),
    ({"text": "Hi there.", "voice": "piper:en_US-ljspeech-medium"}, "engine_unavailable",
     "en_US-ljspeech-medium.onnx"),  # named, without the worker's path
    # #22 item 9: no words, no render (NUL and other control characters are removed first)
    ({"text": "..."}, "invalid_input", "the text produced no speech"),
    ({"text": "."}, "invalid_input", "the text produced no speech"),
    ({"text": ".", "captions": "vtt"}, "invalid_input", "the text produced no speech"),
    ({"text": "\u2014 \u2026"}, "invalid_input", "the text produced no speech"),
    ({"text": "\x00..."}, "invalid_input", "the text produced no speech"),
    ({"text": "\x00\x1b\x07"}, "invalid_input", "control characters"),
])
def test_bad_text_inputs_get_their_codes(tmp_path, fields, code, needle):
    settings = Settings(max_text_chars=40, model_root=tmp_path / "models", work_dir=tmp_path, media_bucket=None)
    result = run_job({"input": {"image_b64": IMAGE, "engine": "parametric", "output": {"delivery": "base64"},
                                **fields}}, settings=settings)
    err = parse_error(result["error"])
    assert err["code"] == code and needle in err["message"], err


def test_list_voices_action(settings):
    voices = run_job({"input": {"action": "list_voices"}}, settings=settings)["voices"]
    names = {v["voice"] for v in voices}
    assert {"espeak:en-us", "espeak:de", "espeak:ru", "espeak:hi", "espeak:el"} <= names


def test_nul_and_control_characters_are_removed_before_speech_and_captions(settings):
    """eSpeak stops at a NUL; the captions showed the whole string. Both now read the same cleaned text."""
    result = _ok(run_job(_job(text="\x00Hello\x00 there\x1b[31m friend\x07.\x7f", captions="srt"),
                         settings=settings))
    cues = parse_srt(result["captions"])
    assert " ".join(c.text for c in cues) == "Hello there[31m friend."
    reference = speak("Hello there[31m friend.", voice=None, language="en", settings=settings)
    assert abs(result["duration_s"] - round(reference.duration_s, 3)) < 0.05  # the whole text was spoken
