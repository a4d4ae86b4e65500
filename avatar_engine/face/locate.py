"""Find the one face an engine animates, with the errors every engine gives for a missing or tiny face."""

from __future__ import annotations

import numpy as np

from ..errors import AvatarError
from .landmarks import get_face_mesh

MIN_FACE_PX = 64
_MIN_MESH_SCORE = 0.5


def locate_face(image: np.ndarray, source_scale: float = 1.0) -> tuple[np.ndarray, list[float]]:
    """468 landmarks of the largest face, and its box; `no_face` / too-small errors otherwise.

    The size limit applies to the face in the caller's image (`source_scale` source pixels per
    pixel of `image`): an upscaled thumbnail has no detail to animate.
    """
    mesh = get_face_mesh()
    faces = mesh.detect(image)
    if not faces:
        raise AvatarError("no_face", "no face was found in the image; send a clear, front-facing portrait "
                                     "(or set on_no_face: \"still\" to get the still image with the audio)")
    face = faces[0]
    if face.size * source_scale < MIN_FACE_PX:
        raise AvatarError("invalid_input", f"the face is only {face.size * source_scale:.0f} px across in the image; "
                                           f"at least {MIN_FACE_PX} px is needed (send a larger or closer portrait)")
    points, score = mesh.landmarks(image, face)
    if score < _MIN_MESH_SCORE:
        raise AvatarError("no_face", "a face-like region was found but no face could be fitted to it")
    return points, [round(float(v), 1) for v in face.box]
