"""The per-frame mouth track (open, width, round, closed) from speech, by phonemes or by signal.

Free phone recognition can run beside the render (`background=True`): the track's arrays are filled
stretch by stretch as pocketsphinx finishes them, and `wait(i)` blocks the renderer only until frame
i is final, so frames for the first seconds are drawn while the rest is still being recognised.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..face.blend import smoothstep
from .features import FrameFeatures, frame_features

log = logging.getLogger(__name__)

Check = Callable[[], None]
_MARGIN_S = 0.12  # coarticulation smoothing reaches this far: frames closer to the recognised edge wait


@dataclass
class MouthTrack:
    open: np.ndarray  # 0..1 jaw/lip opening
    width: np.ndarray  # -1 (narrow) .. 1 (spread)
    round: np.ndarray  # 0..1 lip rounding
    loudness: np.ndarray  # 0..1, drives head emphasis
    method: str  # "phonemes", "alignment", "synthesizer" or "signal"
    closed: np.ndarray | None = None  # 0..1 lips pressed together (P/B/M, pauses inside speech)
    _progress: _Progress | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.closed is None:
            self.closed = np.zeros_like(self.open)

    def wait(self, index: int) -> None:
        """Block until frame `index` is final (a background recognition is past it); re-raises its error."""
        if self._progress is not None:
            self._progress.wait(index)

    def stop(self) -> None:
        """Stop a background recognition (the render ended early); harmless otherwise."""
        if self._progress is not None:
            self._progress.stop.set()


def _signal_shapes(f: FrameFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    opening = gaussian_filter1d(f.loudness, 0.7, mode="nearest")
    bright = f.brightness - np.median(f.brightness[f.loudness > 0.1]) if np.any(f.loudness > 0.1) else f.brightness * 0
    width = np.clip(bright / 12.0, -1, 1) * np.clip(f.loudness * 2, 0, 1)
    rounding = np.clip(-bright / 12.0, 0, 1) * f.voiced * np.clip(f.loudness * 2, 0, 1)
    return (np.clip(opening, 0, 1), gaussian_filter1d(width, 1.5, mode="nearest"),
            gaussian_filter1d(rounding, 1.5, mode="nearest"))


def _speaking(loudness: np.ndarray, fps: float) -> np.ndarray:
    """0..1: inside a stretch of speech, pauses under ~0.6 s bridged (the lips stay in speech position
    between words), 0 in real pauses, where the mouth returns to the portrait's."""
    voiced = (loudness > 0.05).astype(np.float64)
    level = gaussian_filter1d(voiced, 0.22 * fps, mode="nearest") * 3.0
    return smoothstep((level - 0.06) / 0.94)  # exactly 0 inside a real pause: the portrait's own mouth


def _signal_closed(opening: np.ndarray, speaking: np.ndarray) -> np.ndarray:
    """Lips meet where speech dips between syllables; in pauses the mouth returns to the portrait's."""
    return np.clip(speaking * (1.0 - opening / 0.25), 0, 1)


def _signal_track(feats: FrameFeatures, fps: float) -> MouthTrack:
    open_s, width_s, round_s = _signal_shapes(feats)
    closed = _signal_closed(open_s, _speaking(feats.loudness, fps))
    return MouthTrack(open_s, width_s, round_s, feats.loudness, "signal", closed)


class _Blend:
    """Phone shapes blended with the signal shapes, frame range by frame range."""

    def __init__(self, feats: FrameFeatures, n_frames: int, fps: float):
        self.feats, self.n_frames, self.fps = feats, n_frames, fps
        self.open_s, self.width_s, self.round_s = _signal_shapes(feats)
        self.speaking = _speaking(feats.loudness, fps)
        self.gate = np.clip(feats.loudness * 1.6, 0, 1)

    def empty(self, method: str) -> MouthTrack:
        z = np.zeros(self.n_frames)
        return MouthTrack(z.copy(), z.copy(), z.copy(), self.feats.loudness, method, z.copy())

    def fill(self, track: MouthTrack, phones: list, lo: int, hi: int) -> None:
        from .visemes import viseme_track

        if hi <= lo:
            return
        v_open, v_width, v_round, closure = (a[lo:hi] for a in viseme_track(phones, self.n_frames, self.fps))
        gate, speaking = self.gate[lo:hi], self.speaking[lo:hi]
        sealed = np.clip(closure * 1.5, 0, 1)
        opening = np.clip((0.55 * v_open + 0.45 * self.open_s[lo:hi]) * gate * (1 - sealed), 0, 1)
        track.width[lo:hi] = np.clip(0.7 * v_width + 0.3 * self.width_s[lo:hi], -1, 1)
        track.round[lo:hi] = np.clip(0.7 * v_round + 0.3 * self.round_s[lo:hi], 0, 1) * gate
        track.closed[lo:hi] = np.maximum(sealed * speaking, _signal_closed(opening, speaking))
        track.open[lo:hi] = opening

    def signal_fill(self, track: MouthTrack, lo: int) -> None:
        """No phones came out: the rest of the track follows the signal."""
        signal = _signal_track(self.feats, self.fps)
        for name in ("open", "width", "round", "closed"):
            getattr(track, name)[lo:] = getattr(signal, name)[lo:]


class _Progress:
    """Frames known so far, guarded by a condition; the recognising thread fills, the renderer waits."""

    def __init__(self, check: Check | None):
        self.ready = 0
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.outer = check

    def check(self) -> None:
        if self.stop.is_set():
            raise _Stopped()
        if self.outer is not None:
            self.outer()

    def advance(self, frames: int) -> None:
        with self.cond:
            self.ready = max(self.ready, frames)
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            self.error = exc
            self.cond.notify_all()

    def wait(self, index: int) -> None:
        with self.cond:
            while self.ready <= index and self.error is None:
                self.cond.wait(0.05)
                if self.outer is not None and self.ready <= index:
                    self.outer()  # the renderer's own deadline / cancel
            if self.error is not None and self.ready <= index:
                raise self.error


class _Stopped(Exception):
    """The render that wanted the track ended; the recognition stops quietly."""


def _recognise_into(wav16k: np.ndarray, blend: _Blend, track: MouthTrack, progress: _Progress) -> None:
    """Fill `track` stretch by stretch from free phone recognition (runs in the recognising thread)."""
    from .phonemes import recognize_stream

    phones: list = []
    done = 0
    try:
        for final_s, segment in recognize_stream(wav16k, progress.check):
            phones.extend(segment)
            upto = min(blend.n_frames, max(done, int((final_s - _MARGIN_S) * blend.fps)))
            blend.fill(track, phones, done, upto)
            progress.advance(upto)
            done = upto
        if phones:
            blend.fill(track, phones, done, blend.n_frames)
        else:
            blend.signal_fill(track, done)
        progress.advance(blend.n_frames)
    except _Stopped:
        pass
    except BaseException as exc:  # noqa: BLE001 - handed to the renderer, re-raised in `wait`
        progress.fail(exc)


def mouth_track(wav16k: np.ndarray, n_frames: int, fps: float, *, lipsync: str = "auto",
                language: str = "en", transcript: str | None = None, timeline=None,
                check: Check | None = None, background: bool = False) -> MouthTrack:
    """Phonemes for English (aligned to `transcript` when given), the signal path otherwise.

    A `timeline` (speech/timeline.py: a synthesizer's, exact in any language, or a transcript's
    alignment done already for captions) is used instead of recognition unless `lipsync` is "signal".
    Phoneme shapes are scaled by loudness so a mis-recognised phone in a quiet stretch cannot
    open the mouth, and silence always leaves the portrait's own mouth. `check` (a job's deadline /
    cancel) runs between pieces of decoding; `background=True` recognises beside the render.
    """
    feats = frame_features(wav16k, n_frames, fps)
    english = language.lower().startswith("en")
    given = timeline is not None and bool(timeline.phones)
    if lipsync == "signal" or (lipsync == "auto" and not english and not given) or not feats.loudness.any():
        return _signal_track(feats, fps)
    blend = _Blend(feats, n_frames, fps)
    phones, method = None, "phonemes"
    if given:
        phones, method = list(timeline.phones), timeline.source  # "synthesizer" or "alignment"
    elif transcript:
        from .phonemes import align_phones

        phones, method = align_phones(wav16k, transcript, check), "alignment"
    if phones:
        track = blend.empty(method)
        blend.fill(track, phones, 0, n_frames)
        return track
    track = blend.empty("phonemes")
    progress = _Progress(check)
    track._progress = progress
    if not background:
        _recognise_into(wav16k, blend, track, progress)
        progress.wait(n_frames - 1)
        return track
    threading.Thread(target=_recognise_into, args=(wav16k, blend, track, progress),
                     name="phone-recognition", daemon=True).start()
    return track
