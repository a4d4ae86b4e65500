"""What a frame stage is: one step over an engine's finished frames, before encoding.

Modelled on facefusion's frame processors: a stage says whether it can run on this machine (`status`),
loads its model once per process (`warm_up`), decides per job how much it is wanted (`need`), loads what
one job needs before the first frame (`load`), and maps a stream of frames to a stream of frames
(`apply`). A plan lists the stages that belong to its chain (engines/selection.py); the request may ask
for a stage or turn one off. The pipeline opens and applies them in one place (stages/__init__.py).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import numpy as np

if TYPE_CHECKING:
    from ..engines.base import RenderJob
    from ..schema import RenderRequest
    from ..settings import Settings


class Need(enum.Enum):
    """How much one job wants a stage."""

    OFF = "off"  # the job does not run it
    WANTED = "wanted"  # runs when it can; otherwise the job renders without it and says why in `warnings`
    REQUIRED = "required"  # the request asked for it: when it cannot run, the job fails before rendering


@dataclass(frozen=True)
class StageStatus:
    available: bool
    reason: str = ""


class FrameStage(ABC):
    """A step over an engine's frames. `load` raises AvatarError only for a REQUIRED stage."""

    name: ClassVar[str]
    license: ClassVar[str]  # of the model or assets the stage runs
    in_chain: ClassVar[bool] = True  # named in the result's `chain` when it ran (an overlay draws no face)
    result_flag: ClassVar[str | None] = None  # a result key set to true when the stage ran

    def status(self, settings: Settings) -> StageStatus:
        return StageStatus(True)

    def warm_up(self, settings: Settings) -> None:
        """Load models now (called at worker start) so the first job pays nothing extra."""

    @abstractmethod
    def need(self, request: RenderRequest, *, listed: bool) -> Need:
        """How much this request wants the stage on a plan that lists it (`listed`) or does not."""

    @abstractmethod
    def load(self, job: RenderJob, need: Need, warnings: list[str]) -> Any | None:
        """What `apply` needs for this job (a model, the cues), or None when a WANTED stage cannot run
        (saying why in `warnings` where a caller should know)."""

    @abstractmethod
    def apply(self, frames: Iterator[np.ndarray], job: RenderJob, loaded: Any) -> Iterator[np.ndarray]:
        """The frames after this stage, lazily: one frame in, one frame out."""
