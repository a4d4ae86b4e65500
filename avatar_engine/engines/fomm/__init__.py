"""`fomm`: FOMM (First Order Motion Model, vox-256) head motion on the portrait, from a reference video or
from the audio-driven head track, then a lip stage. Importing this package imports no torch.

Modules: nets (networks), checkpoints (lookup, strict load, cache), motion (keypoint motion),
driving (reference-video decoding), engine (the `Engine`).
"""

from .engine import FommEngine

__all__ = ["FommEngine"]
