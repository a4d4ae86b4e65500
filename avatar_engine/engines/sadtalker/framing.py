"""Per-clip SadTalker math that needs no network: the face-crop geometry, the paste-back blend, driving
coefficients at the output frame rate and the MappingNet input windows.

The crop follows the geometry of upstream's `Preprocesser.align_face` (OpenTalker/SadTalker, Apache-2.0):
a square around `eye_avg + 0.1 * eye_to_mouth` whose side is `2 * max(2 * |eye_to_eye|, 1.8 * |eye_to_mouth|)`.
Unlike upstream, the square is kept square (shifted inside the image instead of clipped, so the face is
never stretched) and the rendered face is blended back through a feathered ellipse instead of
`cv2.seamlessClone` (which shifts colours and costs ~100 ms per frame at 512 px).
"""

from __future__ import annotations

import numpy as np

from ...audio.frames import frame_count_for_samples
from ...audio.mel import SAMPLE_RATE
from .glue import SEMANTIC_RADIUS, audio_to_coeffs, transform_semantic_target

COEFF_FPS = 25  # SadTalker's audio->coefficient networks were trained on 25 fps video
SAMPLES_PER_COEFF_FRAME = SAMPLE_RATE // COEFF_FPS  # 640


# --- coefficients at the output frame rate -------------------------------------------------------------


def coeff_frames_for(num_samples: int) -> int:
    """25 fps coefficient frames covering the whole 16 kHz clip (the one frame-count rule at 25 fps)."""
    return frame_count_for_samples(num_samples, COEFF_FPS, SAMPLE_RATE)


def pad_audio(wav16k: np.ndarray) -> np.ndarray:
    """Zero-pad to a whole number of 25 fps frames so the clip's tail gets its own coefficients."""
    wav = np.asarray(wav16k, dtype=np.float32).reshape(-1)
    need = coeff_frames_for(len(wav)) * SAMPLES_PER_COEFF_FRAME
    return np.pad(wav, (0, need - len(wav))) if need > len(wav) else wav


def resample_coeffs(coeffs: np.ndarray, n_frames: int, fps: float, src_fps: float = COEFF_FPS) -> np.ndarray:
    """(T, C) coefficients at `src_fps` -> (n_frames, C) at `fps`: output frame i samples time i/fps, linearly
    interpolated and clamped to the last frame. Exact copies when fps == src_fps."""
    coeffs = np.asarray(coeffs, dtype=np.float32)
    t = coeffs.shape[0]
    pos = np.minimum(np.arange(n_frames, dtype=np.float64) * (src_fps / float(fps)), t - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, t - 1)
    frac = (pos - lo).astype(np.float32)[:, None]
    return (coeffs[lo] * (1 - frac) + coeffs[hi] * frac).astype(np.float32)


def driving_coeffs(
    wav16k: np.ndarray,
    ref_coeff70: np.ndarray,
    audio2exp_net,
    audio2pose_net,
    *,
    fps: float,
    n_frames: int,
    pose_style: int = 0,
    seed: int = 0,
    still: bool = False,
    expression_scale: float = 1.0,
) -> np.ndarray:
    """(n_frames, 70) driving coefficients for video at `fps`: computed at 25 fps (what the networks learned)
    over the zero-padded clip, then sampled at the output frame times."""
    coeffs25 = audio_to_coeffs(pad_audio(wav16k), ref_coeff70, audio2exp_net, audio2pose_net, fps=COEFF_FPS,
                               pose_style=pose_style, seed=seed, still=still, expression_scale=expression_scale)
    return resample_coeffs(coeffs25, n_frames, fps)


def mapping_windows(coeffs: np.ndarray, start: int, stop: int, extra: np.ndarray | None = None,
                    radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """MappingNet inputs (stop - start, C [+ len(extra)], 2*radius+1) float32 for frames start..stop-1 of the
    whole sequence (windows clamp at the clip's ends). `extra` (the `full` mode's crop params) is appended
    to every frame, as upstream does for the 73-channel MappingNet."""
    coeffs = np.asarray(coeffs, dtype=np.float32)
    if extra is not None:
        tail = np.broadcast_to(np.asarray(extra, dtype=np.float32).reshape(1, -1), (coeffs.shape[0], np.size(extra)))
        coeffs = np.concatenate([coeffs, tail], axis=1)
    return np.stack([transform_semantic_target(coeffs, i, radius) for i in range(start, stop)]).astype(np.float32)
