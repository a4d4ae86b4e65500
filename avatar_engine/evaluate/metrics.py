"""What a viewer would notice in a rendered MP4, measured from the file alone (so every target is
measured the same way): the A/V sync check, the mouth during silence, blinks and head motion.

The face is tracked once (`quality.track_face`, the sync check's own tracker); the speech is the MP4's
own audio track, so text input (whose audio the worker makes) is measured exactly like audio input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.io import decode_audio
from ..face import regions as R
from ..media.sync_check import sync_offset, track_face
from ..speech.features import frame_features

#: a frame is silent when its audio is quieter than this (dBFS), or, over background noise, within
#: `NOISE_PAUSE_DB` of the clip's noise floor (its 5th-percentile level) when speech rises `NOISE_SPEECH_DB` above it
SILENT_DB = -45.0
NOISE_PAUSE_DB = 3.0
NOISE_SPEECH_DB = 10.0
#: ... and its mouth is closed when the inner-lip gap is at most this share of the face height wider than
#: at rest (`silence_figures`)
MOUTH_CLOSED_MARGIN = 0.015
#: an eye is shut when its lid opening falls under this share of the clip's median opening
BLINK_SHUT = 0.55


@dataclass
class FaceMetrics:
    """Per-clip figures plus the per-frame series the HTML report plots."""

    figures: dict
    mouth_open: np.ndarray
    loudness: np.ndarray
    fps: float


def count_blinks(eye_open: np.ndarray) -> int:
    """Closings: runs of frames whose lid opening dips under `BLINK_SHUT` x the median opening."""
    valid = eye_open[np.isfinite(eye_open)]
    if valid.size < 3:
        return 0
    shut = np.nan_to_num(eye_open, nan=np.median(valid)) < BLINK_SHUT * np.median(valid)
    return int(np.count_nonzero(shut[1:] & ~shut[:-1]) + int(shut[0]))


def head_motion(points: np.ndarray, fps: float) -> dict:
    """Roll spread (degrees), sway (RMS distance of the nose tip from its median, % of face height) and
    mean speed (% of face height per second)."""
    ok = np.isfinite(points[:, 0, 0])
    pts = points[ok]
    if len(pts) < 2:
        return {"roll_std_deg": None, "sway_rms_pct": None, "speed_pct_s": None}
    frames = [R.face_frame(p) for p in pts]
    height = float(np.median([f[3] for f in frames])) + 1e-9
    roll = np.degrees([np.arctan2(f[1][1], f[1][0]) for f in frames])
    nose = pts[:, R.NOSE_TIP, :2] / height
    sway = np.sqrt(np.mean(np.sum((nose - np.median(nose, axis=0)) ** 2, axis=1)))
    speed = np.mean(np.linalg.norm(np.diff(nose, axis=0), axis=1)) * fps
    return {"roll_std_deg": round(float(np.std(roll)), 3), "sway_rms_pct": round(float(sway) * 100, 3),
            "speed_pct_s": round(float(speed) * 100, 3)}


def rest_opening(portrait: bytes) -> float | None:
    """The portrait's own inner-lip gap (share of face height), tracked as a video frame would be."""
    from ..face.landmarks import FaceTracker
    from ..media.image import decode_image

    rgb = decode_image(portrait, max_pixels=40_000_000)
    tracker = FaceTracker()
    if tracker.update(rgb) is None:
        return None
    return R.mouth_opening(tracker.update(rgb))


def silence_threshold(level_db: np.ndarray) -> float:
    """dBFS under which a frame counts as a pause: digital silence, or the background noise between words."""
    if level_db.size == 0:
        return SILENT_DB
    floor, speech = np.percentile(level_db, [5, 95])
    if floor > SILENT_DB and speech - floor >= NOISE_SPEECH_DB:
        return float(floor + NOISE_PAUSE_DB)
    return SILENT_DB


def silence_figures(mouth_open: np.ndarray, level_db: np.ndarray, portrait_rest: float | None) -> dict:
    """How many frames are silent, and which share of them shows the mouth closed, i.e. at rest (None without
    silence).

    The rest pose is the portrait's own gap when it is known (the embedded engine keeps a smiling portrait's
    smile between words; an engine that closes it is tighter still and counts as closed), else the clip's
    5th-percentile gap; a portrait with closed lips exposes a mouth held open in silence."""
    n = min(len(mouth_open), len(level_db))
    silent = (level_db[:n] < silence_threshold(level_db[:n])) & np.isfinite(mouth_open[:n])
    if portrait_rest is not None:
        rest = float(portrait_rest)
    else:
        rest = float(np.nanpercentile(mouth_open, 5)) if np.isfinite(mouth_open).any() else 0.0
    closed = mouth_open[:n][silent] <= rest + MOUTH_CLOSED_MARGIN
    return {"silent_frames": int(silent.sum()), "rest_mouth_open": round(rest, 4),
            "mouth_closed_fraction": round(float(closed.mean()), 3) if silent.any() else None}


def mouth_box(points: np.ndarray) -> list[int] | None:
    """A square around the lips in pixels, [x0, y0, x1, y1]: the clip's median lip centre, 1.8x the median
    mouth width (the HTML shows mouth close-ups from it)."""
    lips = R.LIPS_OUTER_UPPER + R.LIPS_OUTER_LOWER
    pts = points[np.isfinite(points[:, 0, 0])][:, lips, :2]
    if len(pts) == 0:
        return None
    centre = np.median(pts.mean(axis=1), axis=0)
    half = 0.9 * float(np.median(pts[:, :, 0].max(axis=1) - pts[:, :, 0].min(axis=1)))
    return [int(round(centre[0] - half)), int(round(centre[1] - half)), int(round(centre[0] + half)),
            int(round(centre[1] + half))]


def face_metrics(video: Path, portrait: bytes) -> FaceMetrics:
    """Sync offset and confidence, silent-mouth closure, blinks per minute, head motion, face coverage."""
    track = track_face(video, eyes=True)
    n = len(track.mouth_open)
    audio = decode_audio(Path(video).read_bytes(), max_seconds=7200, min_seconds=0.0)
    features = frame_features(audio.analysis, n, track.fps)
    sync = sync_offset(track.mouth_open, features.loudness, track.fps).to_dict()
    minutes, blinks = n / track.fps / 60.0, count_blinks(track.eye_open)
    figures = {
        "sync": sync,
        **silence_figures(track.mouth_open, features.level_db, rest_opening(portrait)),
        "blinks": blinks,
        "blinks_per_min": round(blinks / minutes, 2) if minutes > 0 else None,
        "head": head_motion(track.points, track.fps),
        "face_found_fraction": round(float(np.isfinite(track.mouth_open).mean()), 3) if n else 0.0,
        "mouth_box": mouth_box(track.points),
    }
    return FaceMetrics(figures, track.mouth_open, features.loudness, track.fps)
