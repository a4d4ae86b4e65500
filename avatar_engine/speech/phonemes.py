"""English phone timing with pocketsphinx: free phone recognition, or forced alignment to a transcript.

The decoders (and their ~0.3 s model load) are created once per process. pocketsphinx holds the
interpreter (the GIL) while it decodes, so free recognition runs in a helper process
(`recognizer.py`), speech stretch by stretch (`recognize_stream`): rendering starts on the first
second while the rest is still being recognised, and a job's deadline or cancel stops the wait at
once. Forced alignment (one utterance) runs here, fed in pieces of `PIECE_S` with the deadline and
cancel checked between them: no call holds the process for more than a few milliseconds.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np

log = logging.getLogger(__name__)

from .features import RATE, SILENCE_DBFS

_FRAME_S = 0.01  # pocketsphinx frames are 10 ms
PIECE_S = 0.1  # audio per decoder call: a few ms of compute, the longest the interpreter is held
FIRST_SEGMENT_S = 1.0  # the first stretch is short: frames can start once it is recognised
MAX_SEGMENT_S = 4.0
_lock = threading.Lock()

Check = Callable[[], None]  # raises to stop (a job's deadline / cancel check)


@dataclass(frozen=True)
class Phone:
    label: str  # CMU/ARPAbet phone without stress, or SIL
    start_s: float
    end_s: float


def _model_dir() -> str:
    from pocketsphinx import get_model_path

    return os.path.join(get_model_path(), "en-us")


_INITIAL_CMN: dict[int, str] = {}


def decode_with_cmn(dec, pcm: bytes, cmn: str, check: Check | None = None) -> tuple[list[tuple[str, int, int]], str]:
    """One utterance from cepstral mean `cmn` ("" = the model's initial one): (phones as (label, first
    frame, last frame), the mean after it). Live normalisation would otherwise carry over from whatever
    the decoder heard before, so the same clip would give other phones in another job."""
    initial = _INITIAL_CMN.setdefault(id(dec), dec.get_cmn(False))
    dec.set_cmn(cmn or initial)
    dec.start_utt()
    _feed(dec, pcm, check)
    dec.end_utt()
    return [(s.word, s.start_frame, s.end_frame) for s in dec.seg()], dec.get_cmn(False)


@lru_cache(maxsize=1)
def _allphone_decoder():
    from pocketsphinx import Decoder

    d = _model_dir()
    # lw/pip tuned for phone loops: fewer spurious insertions than the defaults; topn=2 Gaussians per
    # codebook: ~15 % faster, as accurate against eSpeak's exact phone times
    return Decoder(hmm=os.path.join(d, "en-us"), allphone=os.path.join(d, "en-us-phone.lm.bin"),
                   lw=2.0, pip=0.3, beam=1e-10, pbeam=1e-10, topn=2, loglevel="FATAL")


@lru_cache(maxsize=1)
def _align_decoder():
    from pocketsphinx import Decoder

    d = _model_dir()
    # bestpath=False: the second, phone-level pass (set_alignment) needs the first pass's lattice-free result
    return Decoder(hmm=os.path.join(d, "en-us"), dict=os.path.join(d, "cmudict-en-us.dict"),
                   beam=1e-80, wbeam=1e-60, pbeam=1e-80, bestpath=False, loglevel="FATAL")


def _pcm16(wav16k: np.ndarray) -> bytes:
    return (np.clip(wav16k, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def _clean(label: str) -> str:
    return re.sub(r"\d", "", label.split("(")[0]).upper()


def _hold(check: Check | None) -> None:
    """Take the decoders' lock, looking at `check` (a job's deadline / cancel) while another job holds it."""
    while not _lock.acquire(timeout=0.05):
        if check is not None:
            check()


def _feed(dec, pcm: bytes, check: Check | None) -> None:
    """One utterance's audio in pieces of `PIECE_S`: the decoder holds the interpreter for a few ms at a
    time, and a cancel or timeout (`check` raises) stops it within one piece."""
    step = 2 * int(PIECE_S * RATE)
    for start in range(0, len(pcm), step):
        if check is not None:
            check()
        dec.process_raw(pcm[start:start + step], full_utt=False)


def speech_segments(wav16k: np.ndarray, *, first_s: float = FIRST_SEGMENT_S,
                    max_s: float = MAX_SEGMENT_S) -> list[tuple[int, int]]:
    """(start, end) sample ranges worth recognising, in order: speech between pauses, padded by 50 ms,
    cut at the quietest 10 ms within the window when a stretch runs longer than `max_s` (`first_s` for
    the first one, so the render can start early). Silence between them is never decoded."""
    hop = RATE // 100
    n_hops = len(wav16k) // hop
    if n_hops == 0:
        return []
    frames = wav16k[:n_hops * hop].astype(np.float32).reshape(n_hops, hop)
    level = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)
    active = level[level > SILENCE_DBFS]
    if active.size == 0:
        return []
    loud = level > max(SILENCE_DBFS, float(np.percentile(active, 95)) - 35.0)
    pad, min_pause = 5, 15
    runs, start = [], None
    for i, on in enumerate(np.r_[loud, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            if runs and start - runs[-1][1] < min_pause:  # a short pause does not end the stretch
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((start, i))
            start = None
    segments: list[tuple[int, int]] = []
    for a, b in runs:
        a, b = max(0, a - pad), min(n_hops, b + pad)
        while b - a > (limit := int((first_s if not segments else max_s) * 100)):
            window = level[a + limit // 2:a + limit]
            cut = a + limit // 2 + int(np.argmin(window))
            segments.append((a, cut))
            a = cut
        segments.append((a, b))
    end = len(wav16k)
    return [(a * hop, end if b >= n_hops else b * hop) for a, b in segments]


def _decode_here(pcm: bytes, cmn: str, check: Check | None) -> tuple[list[tuple[str, int, int]], str]:
    """One utterance in this process, in short pieces (when the helper process is unavailable)."""
    _hold(check)
    try:
        return decode_with_cmn(_allphone_decoder(), pcm, cmn, check)
    finally:
        _lock.release()


def decode_utterance(pcm: bytes, cmn: str = "", check: Check | None = None) -> tuple[list[tuple[str, int, int]], str]:
    """Phones of one utterance (and the cepstral mean after it) by the helper process, which never
    holds this interpreter; in this process, piece by piece, where the helper cannot run."""
    from .recognizer import RecognizerUnavailable, phone_process

    try:
        return phone_process().decode(pcm, cmn, check)
    except RecognizerUnavailable as exc:
        log.warning("phone recognition in-process: %s", exc)
        return _decode_here(pcm, cmn, check)


def recognize_stream(wav16k: np.ndarray, check: Check | None = None) -> Iterator[tuple[float, list[Phone]]]:
    """Phone loop recognition stretch by stretch: yields (seconds of audio now final, that stretch's
    phones), so a renderer can start on the first seconds while the rest is still being recognised.
    The cepstral mean runs on from stretch to stretch of this clip (and only this clip)."""
    segments = speech_segments(wav16k)
    cmn = ""
    for k, (a, b) in enumerate(segments):
        segs, cmn = decode_utterance(_pcm16(wav16k[a:b]), cmn, check)
        offset = a / RATE
        final_s = segments[k + 1][0] / RATE if k + 1 < len(segments) else len(wav16k) / RATE
        yield final_s, [Phone(_clean(w), offset + s * _FRAME_S, offset + (e + 1) * _FRAME_S) for w, s, e in segs]


def recognize_phones(wav16k: np.ndarray, check: Check | None = None) -> list[Phone]:
    """Phone loop recognition (no language model of words): vowels reliable, consonants rough."""
    return [phone for _, phones in recognize_stream(wav16k, check) for phone in phones]


def _known_words(dec, transcript: str) -> list[str]:
    words = re.findall(r"[a-z']+", transcript.lower())
    return [w for w in words if dec.lookup_word(w)]


def align_phones(wav16k: np.ndarray, transcript: str, check: Check | None = None) -> list[Phone] | None:
    """Forced alignment of a known transcript; None when it fails (unknown words, mismatch)."""
    aligned = align(wav16k, transcript, check)
    return aligned[0] if aligned else None


def _run_alignment(dec, words: list[str], pcm: bytes, check: Check | None):
    dec.set_align_text(" ".join(words))
    for phone_pass in (False, True):  # words first, then phones within them
        if phone_pass:
            dec.set_alignment()
        dec.start_utt()
        try:
            _feed(dec, pcm, check)
        finally:
            dec.end_utt()
    return dec.get_alignment()


def align(wav16k: np.ndarray, transcript: str, check: Check | None = None) -> tuple[list[Phone], list[Phone]] | None:
    """(phones, words) of a forced alignment; words are dictionary words (lower case), silences left out.

    Transcript words the dictionary does not know are skipped, as in `align_phones`. The whole clip is
    one utterance, fed in short pieces with `check` (deadline / cancel) between them.
    """
    _hold(check)
    try:
        dec = _align_decoder()
        words = _known_words(dec, transcript)
        if not words:
            return None
        try:
            alignment = _run_alignment(dec, words, _pcm16(wav16k), check)
        except (RuntimeError, ValueError) as exc:
            log.info("forced alignment failed: %s", exc)
            return None
    finally:
        _lock.release()
    if alignment is None:
        return None
    phones, words_out = [], []
    for word in alignment:
        if not word.name.startswith("<") and word.name.lower() != "sil":
            words_out.append(Phone(word.name.split("(")[0].lower(), word.start * _FRAME_S,
                                   (word.start + word.duration) * _FRAME_S))
        for ph in word:
            phones.append(Phone(_clean(ph.name), ph.start * _FRAME_S, (ph.start + ph.duration) * _FRAME_S))
    return (phones, words_out) if phones else None
