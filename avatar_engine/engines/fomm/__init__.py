"""FOMM (First Order Motion Model, vox-256): a driving face video re-enacted on the portrait.

Phase 1 (networks, checkpoint loading, keypoint motion, driving-video preparation); the engine class
is wired separately. Importing this package imports no torch.
"""
