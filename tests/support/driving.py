"""Driving-clip helpers as the tests phrase them: a clip looped to a length (the FOMM engine gathers by
`pingpong_indices` itself) and the square crop window around a face box."""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from avatar_engine.engines.fomm.driving import pingpong_indices
from avatar_engine.face.blend import Box

T = TypeVar("T")


def loop_to(frames: Sequence[T] | np.ndarray, n: int) -> list[T] | np.ndarray:
    """`frames` extended (or cut) to exactly n, playing back and forth so motion never jumps.
    Arrays give an array (a gather along axis 0), sequences give a list."""
    idx = pingpong_indices(len(frames), n)
    if isinstance(frames, np.ndarray):
        return frames[idx]
    return [frames[i] for i in idx]


def square_box(box) -> Box:
    """The driving crop's square around a (left, top, right, bottom) face box (`Box.squared`)."""
    return Box(*box).squared()
