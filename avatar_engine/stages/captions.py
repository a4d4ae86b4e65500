"""Captions from word timings: SRT / WebVTT files, and an optional burn-in frame stage.

Word times come from the speech timeline (speech/timeline.py): the synthesizer's word events for
text input (exact), or the forced alignment of a `transcript` for recorded English speech.
Burn-in draws with DejaVu Sans when the system has it (Debian `fonts-dejavu-core`: Latin, Greek,
Cyrillic) and otherwise with the scalable font bundled in Pillow (>= 10.1, `load_default(size=)`:
Latin only).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import AvatarError

MAX_CUE_CHARS = 42  # one comfortable subtitle line (Netflix / BBC guidance)
MAX_CUE_S = 6.0
MIN_GAP_S = 0.6  # a pause this long starts a new cue
_SENTENCE_END = re.compile(r"[.!?…。！？।;:]$")
_CONTENT_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt"}
_SYSTEM_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf")


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def check_text_options(request) -> None:
    """Schema check of the text-input options (raises ValueError, reported as `invalid_input`)."""
    if request.voice is not None and request.text is None:
        raise ValueError("voice applies to text input only; give text, or leave voice out")
    if (request.captions or request.captions_burn) and request.text is None and not request.transcript:
        raise ValueError("captions need the words: give text, or a transcript with the audio")


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
    from ..speech.timeline import Word

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


def ensure_words(request, audio) -> None:
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
    from ..speech.phonemes import align
    from ..speech.timeline import SpeechTimeline

    aligned = align(audio.analysis, transcript)
    words = _words_from_alignment(transcript, aligned[1]) if aligned else []
    if not words:
        raise AvatarError("invalid_input", "the transcript could not be aligned with the audio for captions "
                                           "(check that it is what is said, in English)")
    audio.timeline = SpeechTimeline(phones=aligned[0], words=words, source="alignment")


def request_cues(request, audio) -> list[Cue]:
    timeline = audio.timeline
    return cues_from_words(timeline.words) if timeline is not None else []


# --- delivery -------------------------------------------------------------------------------


def caption_result(request, audio, store=None, video_key: str | None = None) -> dict:
    """`captions` (the file's text) and, with a bucket, `captions_url` of the same file beside the MP4."""
    if not request.captions:
        return {}
    text = format_captions(request_cues(request, audio), request.captions)
    out = {"captions": text}
    if store is not None and video_key:
        name = f"{video_key.rsplit('.', 1)[0]}.{request.captions}"
        with tempfile.TemporaryDirectory(prefix="avatar-captions-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            store.upload(path, name, content_type=f"{_CONTENT_TYPES[request.captions]}; charset=utf-8",
                         metadata={"kind": "captions"}, cache_control="private, max-age=86400, immutable")
        out["captions_url"] = store.link(name).url
    return out


# --- burn-in --------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    for path in _SYSTEM_FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def _overlay(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(RGB patch, alpha 0..1, top row) of one cue: white text on a translucent dark band."""
    from PIL import Image, ImageDraw

    size = max(12, height // 20)
    font = _font(size)
    lines = _wrap(text, font, int(width * 0.9))
    line_h = int(size * 1.25)
    pad = size // 2
    band_h = line_h * len(lines) + 2 * pad
    image = Image.new("RGBA", (width, band_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    widest = max(font.getlength(line) for line in lines)
    left = int((width - widest) / 2) - pad
    draw.rounded_rectangle([left, 0, width - left, band_h - 1], radius=pad, fill=(0, 0, 0, 150))
    for k, line in enumerate(lines):
        draw.text((width / 2, pad + k * line_h), line, font=font, fill=(255, 255, 255, 255), anchor="ma",
                  stroke_width=max(1, size // 16), stroke_fill=(0, 0, 0, 255))
    rgba = np.asarray(image)
    top = max(0, height - band_h - height // 16)
    return rgba[..., :3].astype(np.float32), rgba[..., 3:].astype(np.float32) / 255.0, top


def burn_captions(frames: Iterator[np.ndarray], cues: list[Cue], fps: float) -> Iterator[np.ndarray]:
    """The frames with the cue on screen at each frame's midpoint drawn near the bottom."""
    drawn: dict[int, tuple] = {}
    for i, frame in enumerate(frames):
        t = (i + 0.5) / fps
        k = next((k for k, c in enumerate(cues) if c.start_s <= t < c.end_s), None)
        if k is not None:
            h, w = frame.shape[:2]
            if k not in drawn:
                drawn = {k: _overlay(cues[k].text, w, h)}  # one cue at a time: memory stays flat
            rgb, alpha, top = drawn[k]
            rows = min(rgb.shape[0], h - top)
            region = frame[top:top + rows].astype(np.float32)
            frame = frame.copy()
            frame[top:top + rows] = (region * (1 - alpha[:rows]) + rgb[:rows] * alpha[:rows] + 0.5).astype(np.uint8)
        yield frame


def caption_stage(frames: Iterator[np.ndarray], request, audio, fps: float) -> Iterator[np.ndarray]:
    """The pipeline's frame stage: burn captions in when `captions_burn` is set."""
    if not request.captions_burn:
        return frames
    return burn_captions(frames, request_cues(request, audio), fps)
