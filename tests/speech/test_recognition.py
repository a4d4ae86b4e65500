"""Phone recognition off the interpreter: stretches between pauses, the same phones whatever the helper
process heard before, and the same phones in-process where the helper cannot run."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from avatar_engine.speech import phonemes
from tests.support.media import asset_bytes


def _speech() -> np.ndarray:
    with wave.open(io.BytesIO(asset_bytes("speech_16k.wav"))) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def test_segments_start_short_and_skip_pauses():
    wav = np.concatenate([_speech(), np.zeros(16000, np.float32), _speech()])
    segments = phonemes.speech_segments(wav)
    lengths = [(b - a) / 16000 for a, b in segments]
    assert lengths[0] <= phonemes.FIRST_SEGMENT_S + 0.01 and max(lengths) <= phonemes.MAX_SEGMENT_S + 0.01
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(segments, segments[1:]))
    pause = (len(_speech()) + 3000, len(_speech()) + 13000)  # the middle of the inserted second of silence
    assert not any(a < pause[1] and b > pause[0] for a, b in segments)
    assert phonemes.speech_segments(np.zeros(16000, np.float32)) == []


def test_phones_do_not_depend_on_what_was_recognised_before():
    wav = _speech()
    first = phonemes.recognize_phones(wav)
    phonemes.recognize_phones(np.ascontiguousarray(wav[::-1]))  # other audio through the same helper
    assert phonemes.recognize_phones(wav) == first and len(first) > 20


def test_in_process_fallback_gives_the_helpers_phones(monkeypatch):
    from avatar_engine.speech import recognizer

    wav = _speech()
    helper = phonemes.recognize_phones(wav)

    def unavailable(*args, **kwargs):
        raise recognizer.RecognizerUnavailable("test")

    monkeypatch.setattr(recognizer.PhoneProcess, "decode", unavailable)
    assert phonemes.recognize_phones(wav) == helper


def test_a_check_that_raises_stops_recognition():
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] > 2:
            raise TimeoutError("stop")

    with pytest.raises(TimeoutError):
        phonemes.recognize_phones(np.tile(_speech(), 4), check)
