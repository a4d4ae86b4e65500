"""What every engine implements, and what the pipeline hands it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from ..audio.io import AudioClip
from ..errors import AvatarError
from ..runtime.checkpoints import CheckpointLookup
from ..schema import RenderRequest
from ..serving.deadline import Deadline
from ..settings import Settings


@dataclass
class RenderJob:
    """Decoded inputs plus the options an engine needs; the image is already at output size."""

    request: RenderRequest
    image: np.ndarray  # RGB uint8 (H, W, 3), H and W even
    audio: AudioClip
    fps: int
    n_frames: int
    settings: Settings
    source_scale: float = 1.0  # source image pixels per output pixel (face-size checks use the source)
    # the job's clock and cancel token: engines call `deadline.check(stage)` in their frame loops
    deadline: Deadline = field(default_factory=Deadline.unbounded)
    batch_limit: int | None = None  # set after a CUDA out-of-memory: engines batch at most this many frames
    reference_video: bytes | None = None  # the request's driving video, fetched with the other inputs

    def cap_batch(self, size: int) -> int:
        """An engine's preferred batch size, capped by `batch_limit` (never below 1)."""
        return max(1, min(size, self.batch_limit)) if self.batch_limit else size


@dataclass
class PreparedRender:
    """An engine's per-clip work done (faces found, speech analysed); frames are produced lazily."""

    frames: Iterator[np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineStatus:
    available: bool
    reason: str = ""
    checkpoints: dict[str, str] = field(default_factory=dict)
    forms: dict[str, str] = field(default_factory=dict)  # how each loaded file reached the network (health)


def checkpoint_status(settings: Settings, found: CheckpointLookup, what: str, key: str, *,
                      depends_on: object = None, purpose: str = "") -> EngineStatus:
    """The status of an engine that needs one checkpoint file and, optionally, another engine (its
    motion source): unavailable with the dependency's reason, or with the runtime's missing-file wording."""
    if isinstance(depends_on, Engine) and not (base := depends_on.status(settings)).available:
        return EngineStatus(False, f"needs the {depends_on.name} engine for {purpose}: {base.reason}")
    if not found.found:
        return EngineStatus(False, found.missing_reason(what))
    return EngineStatus(True, checkpoints={key: str(found.path)})


class Engine(ABC):
    """An animation engine. `prepare` raises AvatarError (e.g. `no_face`) before any frame exists."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"

    def status(self, settings: Settings) -> EngineStatus:
        return EngineStatus(True)

    def suits_auto(self, settings: Settings) -> bool:
        """Whether `auto` may pick this engine on this machine (e.g. only with enough GPU memory)."""
        return True

    def warm_up(self, settings: Settings) -> None:
        """Load models now (called at worker import) so the first job pays nothing extra."""

    @abstractmethod
    def prepare(self, job: RenderJob) -> PreparedRender: ...


# --- interfaces engines offer each other (wired by the registry, never imported across engines) ------


@runtime_checkable
class MotionPlan(Protocol):
    """A clip's head motion and blinks, planned before any frame is drawn (the parametric engine's)."""

    n_frames: int
    info: dict

    def landmarks(self, index: int) -> np.ndarray:
        """(468, 2|3) landmark positions of frame `index`, without rendering it (for placing face boxes)."""

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(RGB frame, its landmark positions) per video frame, in order."""


@runtime_checkable
class MotionSource(Protocol):
    """An engine that plans head motion other engines paint lips onto."""

    def motion(self, job: RenderJob, *, animate_mouth: bool) -> MotionPlan: ...


@runtime_checkable
class LipStage(Protocol):
    """An engine that repaints the lips of another engine's frames from the job's speech."""

    def refine(self, frames: Iterable[np.ndarray], job: RenderJob) -> Iterator[np.ndarray]: ...


def choose_lip_stage(stages: Sequence[LipStage], settings: Settings, wanted: str, owner: str) -> LipStage | None:
    """A motion engine's lip stage: `wanted` ("auto": the first wired stage that can run here and suits `auto`
    on this machine, else the first that can run at all; an engine's status decides, so a license the policy
    forbids rules it out), or the named one, which must be wired and able to run (else `engine_unavailable`;
    a named stage runs even where auto would skip it)."""
    if wanted == "auto":
        usable = [lips for lips in stages if not isinstance(lips, Engine) or lips.status(settings).available]
        preferred = (lips for lips in usable if not isinstance(lips, Engine) or lips.suits_auto(settings))
        return next(preferred, usable[0] if usable else None)
    lips = next((lips for lips in stages if getattr(lips, "name", None) == wanted), None)
    if lips is None:
        wired = ", ".join(getattr(x, "name", type(x).__name__) for x in stages) or "none"
        raise AvatarError("engine_unavailable", f"{owner}.lips: the '{wanted}' lip stage is not wired to the {owner} "
                                                f"engine in this worker (wired: {wired})")
    if isinstance(lips, Engine) and not (st := lips.status(settings)).available:
        raise AvatarError("engine_unavailable", f"{owner}.lips: '{wanted}' cannot run here: {st.reason}")
    return lips
