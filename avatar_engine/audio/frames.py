"""The one frame-count rule: the video covers the whole audio, never ending before the speech does."""

from __future__ import annotations

import math


def frame_count(duration_s: float, fps: float) -> int:
    """ceil(duration * fps), at least 1; the epsilon keeps exact multiples (2.0 s at 25 fps = 50) exact."""
    return max(1, math.ceil(duration_s * float(fps) - 1e-6))


def frame_count_for_samples(num_samples: int, fps: float, sample_rate: int) -> int:
    """`frame_count` for a sample count at `sample_rate`."""
    return frame_count(num_samples / float(sample_rate), fps)
