"""`still`: the portrait held still over the audio (the floor every engine falls back to)."""

from .engine import StillEngine

__all__ = ["StillEngine"]
