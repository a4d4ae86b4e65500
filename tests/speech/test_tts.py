"""The embedded eSpeak voice: PCM and events through the C API, the timeline, voices and their errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from avatar_engine.errors import AvatarError
from avatar_engine.settings import Settings
from avatar_engine.speech.espeak import EVENT_PHONEME, EVENT_WORD, engine
from avatar_engine.speech.ipa_phones import phone_label
from avatar_engine.speech.tts import resolve_voice, speak, timeline_from_events
from avatar_engine.speech.visemes import viseme_of

TEXTS = {"en": "Hello world, this is a test.", "de": "Guten Morgen, wie geht es dir?",
         "ru": "Привет, как у тебя дела?", "hi": "नमस्ते, आप कैसे हैं?", "el": "Καλημέρα, τι κάνεις;"}


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_speaks_pcm_with_word_and_phoneme_events(language):
    _, voice = resolve_voice(None, language)
    synth = engine().synthesize(TEXTS[language], voice)
    assert synth.rate == 22050 and synth.pcm.dtype == np.int16
    assert 0.5 < len(synth.pcm) / synth.rate < 5.0
    assert np.abs(synth.pcm).max() > 3000  # audible speech, not silence
    samples = [e.sample for e in synth.events]
    assert samples == sorted(samples) and samples[-1] <= len(synth.pcm)  # absolute, in order, inside the clip
    words = [e for e in synth.events if e.kind == EVENT_WORD]
    assert len(words) == len(TEXTS[language].split())
    assert sum(e.kind == EVENT_PHONEME and e.name != "" for e in synth.events) >= 2 * len(words)


def test_timeline_words_are_the_synthesizers_word_events():
    text = "One small step for a man, one giant leap for mankind."
    synth = engine().synthesize(text, "en-us")
    timeline = timeline_from_events(synth, text)
    events = [e for e in synth.events if e.kind == EVENT_WORD]
    assert " ".join(w.text for w in timeline.words) == text  # eSpeak reads "for a" as one word
    # exact: every word starts at a word event's sample, and every event lies inside its word
    starts = [round(w.start_s * synth.rate) for w in timeline.words]
    assert set(starts) <= {e.sample for e in events}
    for e in events:
        assert any(s <= e.sample < round(w.end_s * synth.rate) for s, w in zip(starts, timeline.words))
    for a, b in zip(timeline.words, timeline.words[1:]):
        assert a.start_s < a.end_s <= b.start_s
    labels = {p.label for p in timeline.phones}
    assert {"M", "P", "F"} <= labels  # "small step for ... man": closures and lip-teeth contacts


def test_two_written_words_read_as_one_keep_both_on_screen():
    text = "I am 123 years old."  # eSpeak reads "I am" as one word and "123" as three
    synth = engine().synthesize(text, "en-us")
    words = timeline_from_events(synth, text).words
    assert " ".join(w.text for w in words) == text
    assert all(w.end_s > w.start_s for w in words)


@pytest.mark.parametrize("ipa,label,viseme", [
    ("p", "P", "A"), ("ˈm", "M", "A"), ("f", "F", "G"), ("β", "V", "G"), ("ˈuː", "UW", "F"), ("y", "UW", "F"),
    ("ˈaː", "AA", "D"), ("aɪ", "AY", "C"), ("oʊ", "OW", "F"), ("ɛ̃", "EH", "C"), ("tʃ", "T", "B"), ("ɹ", "R", "E"),
    ("r", "D", "B"), ("mʲ", "M", "A"), ("", "SIL", "X"),
])
def test_ipa_names_map_to_visemes(ipa, label, viseme):
    assert phone_label(ipa) == label
    assert viseme_of(label) == viseme


def test_palatalisation_mark_extends_the_phone_before_it():
    assert phone_label("ʲ") is None
    synth = engine().synthesize("Привет", "ru")
    phones = timeline_from_events(synth, "Привет").phones
    assert all(p.label != "SIL" for p in phones[:-1])  # "ʲ" and the short transitional vowel are not pauses
    for a, b in zip(phones, phones[1:]):
        assert a.end_s == pytest.approx(b.start_s)


@pytest.mark.parametrize("voice,language,expected", [
    (None, "en", ("espeak", "en-us")), (None, "en-GB", ("espeak", "en-gb")), (None, "de-AT", ("espeak", "de")),
    (None, "ru", ("espeak", "ru")), ("espeak:es", "en", ("espeak", "es")), ("ru", "en", ("espeak", "ru")),
    ("espeak:en-us+f3", "en", ("espeak", "en-us+f3")),
    ("piper:en_US-ljspeech-medium", "en", ("piper", "en_US-ljspeech-medium")),
])
def test_voice_resolution(voice, language, expected):
    backend, name = resolve_voice(voice, language)
    assert (backend, name.lower()) == (expected[0], expected[1].lower())


@pytest.mark.parametrize("voice,language,needle", [
    ("espeak:no-such-voice", "en", "unknown eSpeak voice"), (None, "zz", "no eSpeak voice"),
    ("festival:kal", "en", "unknown voice kind"),
])
def test_unknown_voice_or_language_says_how_to_find_valid_ones(voice, language, needle):
    with pytest.raises(AvatarError) as err:
        resolve_voice(voice, language)
    assert err.value.code == "invalid_input" and needle in err.value.message and "list_voices" in err.value.message


def test_clip_has_both_rates_and_the_timeline(tmp_path):
    clip = speak("Good morning.", voice=None, language="en", settings=Settings(model_root=tmp_path))
    assert clip.rate == 22050 and clip.samples.shape[0] == 1
    assert clip.analysis.size == pytest.approx(clip.samples.shape[1] * 16000 / 22050, abs=2)
    assert clip.duration_s == pytest.approx(clip.samples.shape[1] / 22050)
    assert clip.timeline.source == "synthesizer" and [w.text for w in clip.timeline.words] == ["Good", "morning."]


def test_piper_voice_missing_names_the_file(tmp_path):
    with pytest.raises(AvatarError) as err:
        speak("Hello.", voice="piper:en_US-ljspeech-medium", language="en", settings=Settings(model_root=tmp_path))
    assert err.value.code == "engine_unavailable"
    assert str(tmp_path / "voices" / "en_US-ljspeech-medium.onnx") in err.value.message


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is not None, reason="onnxruntime is installed")
def test_piper_voice_without_onnxruntime_is_unavailable_not_espeak(tmp_path):
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "x.onnx").write_bytes(b"\0")
    (voices / "x.onnx.json").write_text("{}")
    with pytest.raises(AvatarError) as err:
        speak("Hello.", voice="piper:x", language="en", settings=Settings(model_root=tmp_path))
    assert err.value.code == "engine_unavailable" and "onnxruntime" in err.value.message


def test_piper_names_cannot_leave_the_voices_folder(tmp_path):
    with pytest.raises(AvatarError) as err:
        speak("Hello.", voice="piper:../../etc/passwd", language="en", settings=Settings(model_root=tmp_path))
    assert err.value.code == "invalid_input"


def test_text_caps():
    with pytest.raises(AvatarError) as err:
        speak("x" * 30, voice=None, language="en", settings=Settings(max_text_chars=20))
    assert err.value.code == "input_too_large" and "MAX_TEXT_CHARS" in err.value.message
    with pytest.raises(AvatarError) as err:
        speak("   ", voice=None, language="en", settings=Settings())
    assert err.value.code == "invalid_input"


@pytest.mark.parametrize("language", ["fr", "fr-FR", "en-GB", "pt-PT", "es-MX", "zh"])
def test_languages_whose_code_is_not_a_voice_file_still_speak(language, settings):
    """eSpeak loads `fr-fr` or `en-gb` only by their voice files (`fr`, `en`); the evaluator's French failed."""
    clip = speak("Bonjour. Hello.", voice=None, language=language, settings=settings)
    assert clip.duration_s > 0.3


def test_control_characters_never_cut_the_speech_short():
    """Callers that bypass the request schema (live sessions) get the same cleaning (#22 item 9)."""
    whole = speak("Hello there friend.", voice=None, language="en", settings=Settings())
    dirty = speak("Hello\x00 there\x1b friend.\x07", voice=None, language="en", settings=Settings())
    assert abs(dirty.duration_s - whole.duration_s) < 0.05
    assert [w.text for w in dirty.timeline.words] == [w.text for w in whole.timeline.words]
    with pytest.raises(AvatarError, match="produced no speech"):
        speak("\x00...", voice=None, language="en", settings=Settings())
