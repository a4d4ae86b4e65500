"""`sadtalker`: SadTalker (OpenTalker/SadTalker) audio -> 3DMM coefficients -> face renderer, pasted back."""

from .engine import SadTalkerEngine

__all__ = ["SadTalkerEngine"]
