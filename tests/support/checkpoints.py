"""Checkpoint look-ups as the tests phrase them (the engines call `lookup(settings)` directly)."""

from __future__ import annotations

from pathlib import Path

from avatar_engine.engines.diff2lip.checkpoints import lookup as diff2lip_lookup
from avatar_engine.engines.fomm.checkpoints import lookup as fomm_lookup
from avatar_engine.settings import Settings


def find_fomm_checkpoint(settings: Settings) -> Path | None:
    """The FOMM file to use, or None when there is none (never raises)."""
    return fomm_lookup(settings).path


def require_fomm_checkpoint(settings: Settings) -> Path:
    """`find_fomm_checkpoint`, or `AvatarError('engine_unavailable')` naming the path(s) looked at."""
    return fomm_lookup(settings).require("FOMM checkpoint")


def find_diff2lip_checkpoint(settings: Settings) -> Path | None:
    """The Diff2Lip file to use, or None when there is none (never raises)."""
    return diff2lip_lookup(settings).path
