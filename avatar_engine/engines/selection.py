"""Which chain of engines renders a request: per quality mode, by GPU memory and mounted checkpoints.

- An explicit `engine` wins over the mode: that engine alone (it fails with `engine_unavailable` when it
  cannot run here).
- `real_time`: SadTalker motion + MuseTalk lips (both on a GPU; Wav2Lip lips when MuseTalk is not mounted),
  else the embedded engine's motion + MuseTalk lips (GPU), else + Wav2Lip lips, else the embedded engine alone.
- MODEL_LICENSES=commercial: engines whose license forbids commercial use (Wav2Lip, Diff2Lip) report
  themselves unavailable, naming the license, so every chain steps to the ones that allow it and an explicit
  request for one fails with `engine_unavailable`.
- `high_quality`: FOMM motion + Diff2Lip lips + GFPGAN restoration when all three checkpoints are mounted
  (honoured on a CPU too, with a warning: minutes per frame); else the real-time chain, saying why.
- `auto`: high quality when a CUDA GPU has `HQ_MIN_FREE_GPU_GB` free and every HQ checkpoint is mounted,
  else real time with what is mounted, else the embedded engine. A request with a `reference_video_*`
  (a driving video) runs FOMM.

Every list ends with the embedded engine, so a failing neural engine falls back to it at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import AvatarError
from ..runtime.device import GIB, gpu_free_bytes
from ..settings import Settings
from ..stages import RESTORE, FrameStage
from .base import Engine

HQ_ENGINES = ("fomm", "diff2lip")  # plus the GFPGAN restoration stage


@dataclass(frozen=True)
class Plan:
    """One way to render: an engine, the request options it implies, and the frame stages of its chain."""

    engine: Engine
    chain: tuple[str, ...]  # the engines that draw the frames, e.g. ("parametric", "wav2lip")
    options: dict = field(default_factory=dict)  # request fields set for this plan (e.g. SadTalker's lip_refine)
    frame_stages: tuple[FrameStage, ...] = ()  # stages that belong to this chain (the request may add or drop one)
    quality_mode: str = "real_time"  # the mode this chain is

    @property
    def stages(self) -> tuple[str, ...]:
        """Every stage name of the chain, engines first (what health and `auto_picks` report)."""
        return self.chain + tuple(stage.name for stage in self.frame_stages)

    @property
    def restore(self) -> bool:
        """Whether face restoration belongs to this chain."""
        return RESTORE in self.frame_stages

    def run_mode(self, requested: str) -> str:
        """The quality mode a render of this plan runs in (encoder preset): the chain's, or what was asked."""
        return "high_quality" if "high_quality" in (self.quality_mode, requested) else "real_time"


@dataclass(frozen=True)
class Selection:
    plans: list[Plan]
    reason: str | None = None  # why the chain differs from what the request asked for
    warnings: tuple[str, ...] = ()


def _usable(engines: dict[str, Engine], name: str, settings: Settings) -> bool:
    engine = engines.get(name)
    return engine is not None and engine.status(settings).available


def _real_time(engines: dict[str, Engine], order: tuple[str, ...], settings: Settings) -> list[Plan]:
    """`order` (the registry's AUTO_ORDER) filtered to what can run here and suits `auto` on this machine."""
    muse = _usable(engines, "musetalk", settings) and engines["musetalk"].suits_auto(settings)
    lips = "musetalk" if muse else "wav2lip" if _usable(engines, "wav2lip", settings) else None
    plans = []
    for name in order:
        engine = engines.get(name)
        if engine is None or not engine.status(settings).available or not engine.suits_auto(settings):
            continue
        if name == "sadtalker" and lips:  # SadTalker's motion, MuseTalk's or Wav2Lip's lips
            plans.append(Plan(engine, ("sadtalker", lips), {"sadtalker": {"lip_refine": True, "lips": lips}}))
        elif name in ("wav2lip", "musetalk"):
            plans.append(Plan(engine, ("parametric", name)))
        else:
            plans.append(Plan(engine, (name,)))
    return plans or [Plan(engines["still"], ("still",))]


def hq_missing(engines: dict[str, Engine], settings: Settings) -> list[str]:
    """What the high-quality chain lacks here (empty when FOMM, Diff2Lip and GFPGAN can all run)."""
    missing = [f"{name}: {engines[name].status(settings).reason}" if name in engines else f"{name}: not built in"
               for name in HQ_ENGINES if not _usable(engines, name, settings)]
    restore = RESTORE.status(settings)
    if not restore.available:
        missing.append(f"{RESTORE.name}: {restore.reason}")
    return missing


def _high_quality(engines: dict[str, Engine]) -> Plan:
    return Plan(engines["fomm"], HQ_ENGINES, {"fomm": {"lips": "diff2lip"}}, (RESTORE,), "high_quality")


def select(engines: dict[str, Engine], order: tuple[str, ...], requested: str, quality_mode: str,
           settings: Settings, *, reference_video: bool = False) -> Selection:
    if requested == "auto" and reference_video:  # a driving video means FOMM's motion transfer
        fomm = engines.get("fomm")
        if fomm is None or not fomm.status(settings).available:
            reason = fomm.status(settings).reason if fomm is not None else "not built into this worker"
            raise AvatarError("engine_unavailable", f"reference_video needs the fomm engine, which cannot run here: "
                                                    f"{reason}")
        requested = "fomm"
    if requested != "auto":
        engine = engines.get(requested)
        if engine is None:
            raise AvatarError("engine_unavailable", f"engine '{requested}' is not built into this worker")
        st = engine.status(settings)
        if not st.available:
            usable = [n for n, e in engines.items() if e.status(settings).available]
            raise AvatarError("engine_unavailable",
                              f"engine '{requested}' cannot run here: {st.reason}. Usable engines: {', '.join(usable)}")
        return Selection([Plan(engine, (engine.name,))])
    real_time = _real_time(engines, order, settings)
    if quality_mode == "real_time":
        return Selection(real_time)
    missing = hq_missing(engines, settings)
    if quality_mode == "high_quality":
        if missing:
            return Selection(real_time, reason="high_quality needs FOMM + Diff2Lip + GFPGAN: " + "; ".join(missing))
        warnings = () if gpu_free_bytes() else ("high_quality on a CPU: FOMM and Diff2Lip take minutes per frame",)
        return Selection([_high_quality(engines)] + real_time, warnings=warnings)
    if not missing and gpu_free_bytes() >= settings.hq_min_free_gpu_gb * GIB:  # torch only when HQ could run
        return Selection([_high_quality(engines)] + real_time)
    return Selection(real_time)


def auto_picks(engines: dict[str, Engine], order: tuple[str, ...], settings: Settings) -> list[str]:
    """The stage names `auto` would run here (for health and engine listings)."""
    return list(select(engines, order, "auto", "auto", settings).plans[0].stages)
