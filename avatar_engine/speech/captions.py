"""Caption text from word timings: cues, SRT / WebVTT files, and the words of a request.

Word times come from the speech timeline (speech/timeline.py): the synthesizer's word events for
text input (exact), or the forced alignment of a `transcript` for recorded English speech. Drawing the
cues onto frames is a frame stage (stages/captions.py); the file beside the MP4 is delivered by
media/delivery.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import AvatarError

MAX_CUE_CHARS = 42  # one comfortable subtitle line (Netflix / BBC guidance)
MAX_CUE_S = 6.0
MIN_GAP_S = 0.6  # a pause this long starts a new cue
_SENTENCE_END = re.compile(r"[.!?…。！？।;:]$")
CONTENT_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt"}


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def cues_from_words(words, *, max_chars: int = MAX_CUE_CHARS, max_s: float = MAX_CUE_S) -> list[Cue]:
    """Group timed words into cues: a cue ends at a sentence end, a pause, or when it is full.

    Cue times are the first word's start and the last word's end, unchanged.
    """
    cues, group = [], []

    def flush():
        if group:
            cues.append(Cue(group[0].start_s, group[-1].end_s, " ".join(w.text for w in group)))
            group.clear()

    for word in words:
        if group:
            text_len = sum(len(w.text) + 1 for w in group) + len(word.text)
            if (word.start_s - group[-1].end_s >= MIN_GAP_S or text_len > max_chars
                    or word.end_s - group[0].start_s > max_s):
                flush()
        group.append(word)
        if _SENTENCE_END.search(word.text):
            flush()
    flush()
    return cues


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _one_line(text: str) -> str:
    # no control characters (ESC, BEL, DEL reach a terminal or player as commands); a blank line ends a cue
    # in both formats, and "-->" would read as a timing line
    return " ".join(_CONTROL.sub("", text).split()).replace("-->", "->")


def _vtt_text(text: str) -> str:
    """WebVTT cue text: '&' and '<' start escapes and tags there, so they are escaped (and '>' with them)."""
    return _one_line(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_srt(cues: list[Cue]) -> str:
    blocks = [f"{i}\n{_stamp(c.start_s, ',')} --> {_stamp(c.end_s, ',')}\n{_one_line(c.text)}\n"
              for i, c in enumerate(cues, 1)]
    return "\n".join(blocks)


def to_vtt(cues: list[Cue]) -> str:
    blocks = [f"{_stamp(c.start_s, '.')} --> {_stamp(c.end_s, '.')}\n{_vtt_text(c.text)}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def format_captions(cues: list[Cue], fmt: str) -> str:
    return to_srt(cues) if fmt == "srt" else to_vtt(cues)


# --- words for a request -------------------------------------------------------------------


def _words_from_alignment(transcript: str, aligned) -> list:
    """Map aligned dictionary words back onto the transcript as written (case, punctuation kept).

    A written token whose words the dictionary lacks (names, numbers) joins the token before it.
    """
    from .timeline import Word

    queue = list(aligned)
    words: list[Word] = []
    pending = ""
    for token in transcript.split():
        keys = re.findall(r"[a-z']+", token.lower())
        times = []
        while keys and queue and queue[0].label in keys:
            key = queue.pop(0)
            keys.remove(key.label)
            times.append(key)
        if not times:
            if words:
                words[-1] = Word(f"{words[-1].text} {token}", words[-1].start_s, words[-1].end_s)
            else:
                pending = f"{pending} {token}".strip()
            continue
        text = f"{pending} {token}".strip()
        pending = ""
        words.append(Word(text, times[0].start_s, times[-1].end_s))
    return words


def ensure_words(request, audio, check=None) -> None:
    """Give `audio` a timeline with words when captions are wanted (align the transcript if needed).

    Text input already has one from the synthesizer. Recorded speech is force-aligned to its
    `transcript` with pocketsphinx (English only); the alignment's phones then drive the lips too.
    """
    if not (request.captions or request.captions_burn):
        return
    if audio.timeline is not None and audio.timeline.words:
        return
    transcript = request.transcript or request.text  # text spoken by a neural voice: no timings of its own
    if not request.language.lower().startswith("en"):
        raise AvatarError("invalid_input", "captions for recorded speech (or a piper voice) come from forced "
                                           "alignment, which is English only; send text with an eSpeak voice instead")
    from .phonemes import align
    from .timeline import SpeechTimeline

    aligned = align(audio.analysis, transcript, check)
    words = _words_from_alignment(transcript, aligned[1]) if aligned else []
    if not words:
        raise AvatarError("invalid_input", "the transcript could not be aligned with the audio for captions "
                                           "(check that it is what is said, in English)")
    audio.timeline = SpeechTimeline(phones=aligned[0], words=words, source="alignment")


def audio_cues(audio) -> list[Cue]:
    """The cues of a decoded clip's words (none without a timeline)."""
    timeline = audio.timeline
    return cues_from_words(timeline.words) if timeline is not None else []
