"""Engine registry: which engines exist, which are usable here, and what `auto` resolves to."""

from __future__ import annotations

from ..settings import Settings
from .base import Engine, EngineStatus, PreparedRender, RenderJob
from .diff2lip import Diff2LipEngine
from .fomm import FommEngine
from .musetalk import MuseTalkEngine
from .parametric import ParametricEngine
from .sadtalker import SadTalkerEngine
from .selection import Plan, Selection, select
from .still import StillEngine
from .wav2lip import Wav2LipEngine

__all__ = ["Engine", "EngineStatus", "PreparedRender", "RenderJob", "ENGINES", "Plan", "Selection", "candidates",
           "list_engines", "register", "select_chain"]

ENGINES: dict[str, Engine] = {}

# The real-time chain tries these in order, skipping those without checkpoints, those the license policy
# forbids, and (SadTalker, MuseTalk) those without a GPU; the embedded engine needs no weights and ends every
# list. See `selection`.
AUTO_ORDER = ("sadtalker", "musetalk", "wav2lip", "parametric")


def register(engine: Engine) -> Engine:
    ENGINES[engine.name] = engine
    return engine


# Engines meet only here: Wav2Lip, Diff2Lip and MuseTalk paint lips on the parametric engine's motion plan,
# and SadTalker's `lip_refine` hands its frames to MuseTalk's (on a GPU) or Wav2Lip's lip stage; FOMM takes
# the parametric head track and the first usable lip stage of its list (Diff2Lip or MuseTalk on a GPU, else
# Wav2Lip, else the parametric mouth repaint; the high-quality chain names Diff2Lip).
_parametric = ParametricEngine()
_wav2lip = Wav2LipEngine(motion=_parametric)
_diff2lip = Diff2LipEngine(motion=_parametric)
_musetalk = MuseTalkEngine(motion=_parametric)
register(SadTalkerEngine(lips=[_musetalk, _wav2lip]))
register(FommEngine(motion=_parametric, lips=[_diff2lip, _musetalk, _wav2lip, _parametric]))
register(_diff2lip)
register(_musetalk)
register(_wav2lip)
register(_parametric)
register(StillEngine())


def list_engines(settings: Settings) -> dict[str, dict]:
    """Every engine with whether it can run here and which checkpoints were found."""
    out = {}
    for name, engine in ENGINES.items():
        st = engine.status(settings)
        out[name] = {"available": st.available, "reason": st.reason, "checkpoints": st.checkpoints}
    return out


def select_chain(requested: str, quality_mode: str, settings: Settings, *, reference_video: bool = False
                 ) -> Selection:
    """The plans to try for a request, best first (see `selection`)."""
    return select(ENGINES, AUTO_ORDER, requested, quality_mode, settings, reference_video=reference_video)


def candidates(requested: str, settings: Settings) -> list[Engine]:
    """Engines `auto` mode (or an explicit engine) would try here, best first."""
    return [plan.engine for plan in select_chain(requested, "auto", settings).plans]
