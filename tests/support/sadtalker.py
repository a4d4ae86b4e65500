"""SadTalker pieces only the tests use: upstream's free-view camera schedule, the head-pose estimator it
builds (the engine takes poses from the audio instead) and a whole-clip render loop (the engine renders in
its own batches)."""

from __future__ import annotations

import numpy as np
import torch

from avatar_engine.engines.sadtalker.nets.facerender import _COMMON, HEEstimator, OcclusionAwareSPADEGenerator


def gen_camera_pose(camera_degrees: list[float], frame_num: int, batch_size: int) -> np.ndarray:
    """Free-view angle keyframes -> per-frame degrees (batch_size, L), linear at constant speed.

    Padded with the last value to a multiple of `batch_size`, batch-major like the target semantics.
    Repeated consecutive keyframes add no frames (upstream divides by zero there).
    """
    degrees = [float(d) for d in camera_degrees]
    if len(degrees) == 1 or frame_num < 2:
        seq = [degrees[0]] * frame_num
    else:
        total = sum(abs(b - a) for a, b in zip(degrees[:-1], degrees[1:]))
        per_frame = total / (frame_num - 1)
        seq = []
        for a, b in zip(degrees[:-1], degrees[1:]):
            if b != a:
                seq += list(np.arange(a, b, per_frame * abs(b - a) / (b - a)))
        seq = seq[:frame_num] if seq else [degrees[0]]
        seq += [seq[-1]] * (frame_num - len(seq))
    seq += [seq[-1]] * ((-frame_num) % batch_size)
    return np.array(seq, dtype=np.float64).reshape(batch_size, -1)


def he_estimator_256() -> HEEstimator:
    """HEEstimator with the `he_estimator_params` of facerender.yaml."""
    return HEEstimator(block_expansion=64, num_bins=66, **_COMMON)


def render_frames(generator: OcclusionAwareSPADEGenerator, source_image: torch.Tensor, kp_source: torch.Tensor,
                  kp_driving: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """Frames `(N, 3, H, W)` in [0, 1] for one source image `(1, 3, H, W)` and driving keypoints `(N, K, 3)`.

    `kp_source` is `(1, K, 3)` or `(N, K, 3)`. The source is encoded once (upstream re-encodes it per frame);
    frames are rendered in chunks of `batch_size` under `torch.inference_mode`. On CPU, chunks larger than 1
    did not render faster per frame, only used more memory.
    """
    n = kp_driving.shape[0]
    if kp_source.shape[0] == 1:
        kp_source = kp_source.expand(n, -1, -1)
    with torch.inference_mode():
        feature = generator.encode_source(source_image)
        frames = []
        for i in range(0, n, batch_size):
            drv = kp_driving[i:i + batch_size]
            src = kp_source[i:i + batch_size]
            frames.append(generator.animate(feature.expand(drv.shape[0], -1, -1, -1, -1), drv, src)["prediction"])
    return torch.cat(frames, dim=0)
