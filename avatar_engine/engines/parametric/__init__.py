"""`parametric`: the embedded CPU engine. Landmark rig + speech-driven mouth; no downloaded weights."""

from .engine import ParametricEngine

__all__ = ["ParametricEngine"]
