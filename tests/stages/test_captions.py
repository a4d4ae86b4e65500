"""Captions: cue grouping keeps word times, SRT/WebVTT are well formed, burn-in draws only on screen."""

from __future__ import annotations

import re

import numpy as np
import pytest

from avatar_engine.speech.captions import Cue, cues_from_words, to_srt, to_vtt
from avatar_engine.speech.espeak import engine
from avatar_engine.speech.timeline import Word
from avatar_engine.speech.tts import timeline_from_events
from avatar_engine.stages.captions import burn_captions

SRT_BLOCK = re.compile(r"^(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n([^\n]+)$")
VTT_CUE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n([^\n]+)$")


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_srt(text: str) -> list[Cue]:
    assert text.endswith("\n") and "\r" not in text
    cues = []
    for i, block in enumerate(text.strip("\n").split("\n\n"), 1):
        m = SRT_BLOCK.match(block)
        assert m, block
        assert int(m.group(1)) == i
        cues.append(Cue(_seconds(*m.groups()[1:5]), _seconds(*m.groups()[5:9]), m.group(10)))
    return cues


def parse_vtt(text: str) -> list[Cue]:
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        m = VTT_CUE.match(block)
        assert m, block
        cues.append(Cue(_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:8]), m.group(9)))
    return cues


def _check_cues(cues: list[Cue]):
    for c in cues:
        assert c.start_s < c.end_s and c.text.strip()
    for a, b in zip(cues, cues[1:]):
        assert a.end_s <= b.start_s  # no overlaps: one caption on screen at a time


TEXT = ("Captions come from the synthesizer. Every word is timed by its own event, so the text on screen "
        "changes exactly when the voice moves on to the next sentence!")


@pytest.fixture(scope="module")
def timeline():
    return timeline_from_events(engine().synthesize(TEXT, "en-us"), TEXT)


def test_cues_keep_the_synthesizers_word_times(timeline):
    cues = cues_from_words(timeline.words)
    assert " ".join(c.text for c in cues) == TEXT
    assert len(cues) >= 3 and all(len(c.text) <= 42 or " " not in c.text for c in cues)
    starts = {w.start_s for w in timeline.words}
    ends = {w.end_s for w in timeline.words}
    assert all(c.start_s in starts and c.end_s in ends for c in cues)
    assert cues[0].text.endswith("synthesizer.")  # a sentence end closes a cue
    _check_cues(cues)


def test_srt_and_vtt_round_trip_to_the_millisecond(timeline):
    cues = cues_from_words(timeline.words)
    for parsed in (parse_srt(to_srt(cues)), parse_vtt(to_vtt(cues))):
        assert [c.text for c in parsed] == [c.text for c in cues]
        for got, want in zip(parsed, cues):
            assert abs(got.start_s - want.start_s) <= 0.0005 and abs(got.end_s - want.end_s) <= 0.0005
        _check_cues(parsed)


def test_caption_text_cannot_break_the_file():
    cues = [Cue(0.0, 1.0, "a --> b\n\nc"), Cue(3661.25, 3662.0, "late")]
    srt, vtt = to_srt(cues), to_vtt(cues)
    assert [c.text for c in parse_srt(srt)] == ["a -> b c", "late"]
    assert "01:01:01,250 --> 01:01:02,000" in srt and "01:01:01.250 --> 01:01:02.000" in vtt
    parse_vtt(vtt)


def test_long_pause_starts_a_new_cue():
    words = [Word("one", 0.0, 0.3), Word("two", 0.3, 0.6), Word("three", 2.0, 2.4)]
    assert [c.text for c in cues_from_words(words)] == ["one two", "three"]


def test_burn_in_draws_only_while_a_cue_is_on_screen_and_only_at_the_bottom():
    fps, h, w = 25, 256, 256
    frames = [np.full((h, w, 3), 128, np.uint8) for _ in range(50)]
    cues = [Cue(0.4, 1.2, "Hello, burned-in world")]
    out = list(burn_captions(iter(frames), cues, fps))
    assert len(out) == 50
    changed = [bool(np.any(f != 128)) for f in out]
    shown = [(i + 0.5) / fps for i in range(50)]
    assert changed == [0.4 <= t < 1.2 for t in shown]
    diff = np.any(out[20] != 128, axis=2)
    rows = np.nonzero(diff.any(axis=1))[0]
    assert rows.min() > h // 2  # the lower half only: the face stays clean
    assert out[20][diff].max() == 255 and out[20][diff].min() < 60  # white text on a dark band: readable
    assert np.all(frames[20] == 128)  # the engine's frame is not modified in place


def test_captions_drop_control_characters_and_vtt_escapes_markup():
    """#22 item 9: ESC/BEL/DEL never reach a caption file; '&' and '<' are escapes/tags in WebVTT."""
    cues = [Cue(0.0, 1.0, "Tom & Jerry <b>x</b> \x1b[2J\x07bell\x7f"), Cue(1.0, 2.0, "a --> b")]
    srt, vtt = to_srt(cues), to_vtt(cues)
    for text in (srt, vtt):
        assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) <= 0x9f for c in text)
    assert "Tom & Jerry <b>x</b> [2Jbell" in srt
    assert "Tom &amp; Jerry &lt;b&gt;x&lt;/b&gt; [2Jbell" in vtt and "a -&gt; b" in vtt
    assert parse_vtt(vtt)[0].text == "Tom &amp; Jerry &lt;b&gt;x&lt;/b&gt; [2Jbell"
