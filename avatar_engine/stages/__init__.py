"""Frame stages: work that runs on an engine's frames before encoding (face restoration, caption burn-in).

`FRAME_STAGES` lists them in the order they run. The pipeline opens them once per job (`open_stages`:
models loaded before the first engine starts, so an asked-for stage that cannot run fails the job fast)
and applies them to each plan's frames in one place (`OpenStages.apply`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from .base import FrameStage, Need, StageStatus
from .captions import CaptionStage
from .restore.stage import RestoreStage

if TYPE_CHECKING:
    from ..engines.base import PreparedRender, RenderJob
    from ..engines.selection import Plan
    from ..settings import Settings

__all__ = ["CAPTIONS", "FRAME_STAGES", "FrameStage", "Need", "OpenStages", "RESTORE", "StageStatus", "open_stages",
           "warm_up_stages"]

RESTORE = RestoreStage()
CAPTIONS = CaptionStage()
FRAME_STAGES: tuple[FrameStage, ...] = (RESTORE, CAPTIONS)  # restoration first: GFPGAN must not repaint text


def _need(stage: FrameStage, request, plan: Plan) -> Need:
    return stage.need(request, listed=stage in plan.frame_stages)


@dataclass
class OpenStages:
    """One job's frame stages, loaded; `apply` runs those each plan needs over its frames."""

    loaded: dict[str, Any] = field(default_factory=dict)

    def apply(self, prepared: PreparedRender, plan: Plan, job: RenderJob) -> tuple[PreparedRender, tuple]:
        """The plan's frames after every stage it runs, and those stages."""
        from ..engines.base import PreparedRender

        frames, info, ran = prepared.frames, dict(prepared.info), []
        for stage in FRAME_STAGES:
            if stage.name not in self.loaded or _need(stage, job.request, plan) is Need.OFF:
                continue
            frames = stage.apply(frames, job, self.loaded[stage.name])
            ran.append(stage)
            if stage.result_flag:
                info[stage.result_flag] = True
        return PreparedRender(frames, info), tuple(ran)


def open_stages(job: RenderJob, plans: Sequence[Plan], warnings: list[str]) -> OpenStages:
    """Load every stage some plan of this job runs; a REQUIRED one that cannot load raises AvatarError."""
    opened = OpenStages()
    for stage in FRAME_STAGES:
        needs = {_need(stage, job.request, plan) for plan in plans}
        if needs == {Need.OFF}:
            continue
        need = Need.REQUIRED if Need.REQUIRED in needs else Need.WANTED
        loaded = stage.load(job, need, warnings)
        if loaded is not None:
            opened.loaded[stage.name] = loaded
    return opened


def warm_up_stages(settings: Settings, log) -> None:
    """Load every stage that can run here; a failure is logged and reported to the jobs that ask."""
    for stage in FRAME_STAGES:
        if stage.status(settings).available:
            try:
                stage.warm_up(settings)
            except Exception:  # noqa: BLE001 - reported per job, not at boot
                log.exception("warming up stage %s failed", stage.name)
