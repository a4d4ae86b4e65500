"""`still`: the portrait held over the audio; the explicit fallback when no face is found."""

from __future__ import annotations

from itertools import repeat

from ..base import Engine, PreparedRender, RenderJob


class StillEngine(Engine):
    name = "still"

    def prepare(self, job: RenderJob) -> PreparedRender:
        frame = job.image
        frame.setflags(write=False)  # the same array is yielded for every frame: nobody may edit it
        return PreparedRender(frames=repeat(frame, job.n_frames))
