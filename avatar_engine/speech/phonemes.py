"""English phone timing with pocketsphinx: free phone recognition, or forced alignment to a transcript.

The decoders (and their ~0.3 s model load) are created once per process.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

_FRAME_S = 0.01  # pocketsphinx frames are 10 ms
_lock = threading.Lock()


@dataclass(frozen=True)
class Phone:
    label: str  # CMU/ARPAbet phone without stress, or SIL
    start_s: float
    end_s: float


def _model_dir() -> str:
    from pocketsphinx import get_model_path

    return os.path.join(get_model_path(), "en-us")


@lru_cache(maxsize=1)
def _allphone_decoder():
    from pocketsphinx import Decoder

    d = _model_dir()
    # lw/pip tuned for phone loops: fewer spurious insertions than the defaults
    return Decoder(hmm=os.path.join(d, "en-us"), allphone=os.path.join(d, "en-us-phone.lm.bin"),
                   lw=2.0, pip=0.3, beam=1e-10, pbeam=1e-10, loglevel="FATAL")


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


def recognize_phones(wav16k: np.ndarray) -> list[Phone]:
    """Phone loop recognition (no language model of words): vowels reliable, consonants rough."""
    with _lock:
        dec = _allphone_decoder()
        dec.start_utt()
        dec.process_raw(_pcm16(wav16k), full_utt=True)
        dec.end_utt()
        segs = [(s.word, s.start_frame, s.end_frame) for s in dec.seg()]
    return [Phone(_clean(w), a * _FRAME_S, (b + 1) * _FRAME_S) for w, a, b in segs]


def _known_words(dec, transcript: str) -> list[str]:
    words = re.findall(r"[a-z']+", transcript.lower())
    return [w for w in words if dec.lookup_word(w)]


def align_phones(wav16k: np.ndarray, transcript: str) -> list[Phone] | None:
    """Forced alignment of a known transcript; None when it fails (unknown words, mismatch)."""
    aligned = align(wav16k, transcript)
    return aligned[0] if aligned else None


def align(wav16k: np.ndarray, transcript: str) -> tuple[list[Phone], list[Phone]] | None:
    """(phones, words) of a forced alignment; words are dictionary words (lower case), silences left out.

    Transcript words the dictionary does not know are skipped, as in `align_phones`.
    """
    with _lock:
        dec = _align_decoder()
        words = _known_words(dec, transcript)
        if not words:
            return None
        try:
            dec.set_align_text(" ".join(words))
            pcm = _pcm16(wav16k)
            for phone_pass in (False, True):  # words first, then phones within them
                if phone_pass:
                    dec.set_alignment()
                dec.start_utt()
                dec.process_raw(pcm, full_utt=True)
                dec.end_utt()
            alignment = dec.get_alignment()
        except (RuntimeError, ValueError) as exc:
            log.info("forced alignment failed: %s", exc)
            return None
        if alignment is None:
            return None
        phones, words = [], []
        for word in alignment:
            if not word.name.startswith("<") and word.name.lower() != "sil":
                words.append(Phone(word.name.split("(")[0].lower(), word.start * _FRAME_S,
                                   (word.start + word.duration) * _FRAME_S))
            for ph in word:
                phones.append(Phone(_clean(ph.name), ph.start * _FRAME_S, (ph.start + ph.duration) * _FRAME_S))
    return (phones, words) if phones else None
