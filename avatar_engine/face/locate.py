"""Find the one face an engine animates, with the errors every engine gives for a missing or tiny face.

Results are cached per process by the image's content hash: a named avatar (or any portrait sent again)
is detected and fitted once, not once per job.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from ..errors import AvatarError
from .landmarks import get_face_mesh

MIN_FACE_PX = 64
_MIN_MESH_SCORE = 0.5
_CACHE_SIZE = 64
_cache: OrderedDict[str, tuple[np.ndarray, list[float]]] = OrderedDict()
_cache_lock = threading.Lock()
cache_stats = {"hits": 0, "misses": 0}


def _content_key(image: np.ndarray, source_scale: float) -> str:
    digest = hashlib.sha256(repr((image.shape, str(image.dtype), float(source_scale))).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def locate_face(image: np.ndarray, source_scale: float = 1.0) -> tuple[np.ndarray, list[float]]:
    """468 landmarks of the largest face, and its box; `no_face` / too-small errors otherwise.

    The size limit applies to the face in the caller's image (`source_scale` source pixels per
    pixel of `image`): an upscaled thumbnail has no detail to animate.
    """
    key = _content_key(image, source_scale)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            cache_stats["hits"] += 1
            points, box = _cache[key]
            return points.copy(), list(box)
    points, box = _fit(image, source_scale)
    with _cache_lock:
        cache_stats["misses"] += 1
        _cache[key] = (points.copy(), list(box))
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return points, box


def _fit(image: np.ndarray, source_scale: float) -> tuple[np.ndarray, list[float]]:
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
