"""One checkpoint-lookup policy for every engine.

An explicit path from the environment (e.g. `WAV2LIP_CKPT`) is the only candidate when set — a wrong
explicit path is reported, never silently replaced by another file; otherwise the first existing file of
`MODEL_ROOT/<engine>/<name>` in the engine's order of preference.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..errors import AvatarError

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointLookup:
    """Where an engine's checkpoint was looked for, and what was found."""

    env: str  # the environment variable that overrides the search, e.g. "WAV2LIP_CKPT"
    candidates: tuple[Path, ...]
    explicit: bool
    path: Path | None = None  # the first candidate that is a readable file

    @property
    def found(self) -> bool:
        return self.path is not None

    def missing_reason(self, what: str) -> str:
        """One wording for every engine: what is missing, where it was looked for, how to fix it."""
        if self.explicit:
            return (f"{what}: {self.env}={self.candidates[0]} {_why_unusable(self.candidates[0])} "
                    f"(fix or unset {self.env})")
        expected = " or ".join(str(p) for p in self.candidates)
        return f"{what} not found (expected {expected}; set {self.env} or MODEL_ROOT)"

    def require(self, what: str) -> Path:
        if self.path is None:
            raise AvatarError("engine_unavailable", self.missing_reason(what))
        return self.path


def _why_unusable(path: Path) -> str:
    if not path.exists():
        return "does not exist"
    if not path.is_file():
        return "is not a file"
    return "is not readable"


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


def find_checkpoint(explicit: Path | None, env: str, model_root: Path, engine: str,
                    names: Sequence[str]) -> CheckpointLookup:
    """The checkpoint policy above, for a single file."""
    if explicit is not None:
        path = Path(explicit)
        return CheckpointLookup(env, (path,), True, path if _readable(path) else None)
    candidates = tuple(Path(model_root) / engine / name for name in names)
    return CheckpointLookup(env, candidates, False, next((p for p in candidates if _readable(p)), None))


def find_checkpoint_dir(explicit: Path | None, env: str, model_root: Path, engine: str) -> CheckpointLookup:
    """The same policy for an engine whose checkpoints are a folder of files (SadTalker)."""
    folder = Path(explicit) if explicit is not None else Path(model_root) / engine
    return CheckpointLookup(env, (folder,), explicit is not None, folder if folder.is_dir() else None)


def report_bad_explicit_paths(settings: Settings) -> None:
    """Log once at worker start every explicit checkpoint setting that points nowhere."""
    for env, value in (("WAV2LIP_CKPT", settings.wav2lip_ckpt), ("GFPGAN_CKPT", settings.gfpgan_ckpt),
                       ("FOMM_CKPT", getattr(settings, "fomm_ckpt", None)),
                       ("DIFF2LIP_CKPT", getattr(settings, "diff2lip_ckpt", None))):
        if value is not None and not _readable(Path(value)):
            log.warning("%s=%s %s; the engines that need it are unavailable", env, value, _why_unusable(Path(value)))
    if settings.sadtalker_ckpt_dir is not None and not Path(settings.sadtalker_ckpt_dir).is_dir():
        log.warning("SADTALKER_CKPT_DIR=%s is not a folder; SadTalker is unavailable", settings.sadtalker_ckpt_dir)
    muse = getattr(settings, "musetalk_dir", None)
    if muse is not None and not Path(muse).is_dir():
        log.warning("MUSETALK_DIR=%s is not a folder; MuseTalk is unavailable", muse)
