"""locate_face: one face per portrait, fitted once per content (the cache named avatars rely on)."""

import numpy as np

from avatar_engine.media.image import decode_image, fit_image


def test_faces_are_detected_once_per_image(portrait_png):
    from avatar_engine.face import locate

    image = fit_image(decode_image(portrait_png, max_pixels=40_000_000), 512)
    before = dict(locate.cache_stats)
    first, box = locate.locate_face(image)
    second, box2 = locate.locate_face(image.copy())  # same pixels, another array: a cache hit
    assert np.array_equal(first, second) and box == box2
    assert locate.cache_stats["misses"] - before["misses"] <= 1
    assert locate.cache_stats["hits"] - before["hits"] >= 1
    first[:] = 0  # callers get copies: the cache cannot be corrupted
    assert locate.locate_face(image)[0].any()
    locate.locate_face(np.ascontiguousarray(image[:, ::-1]))
    assert locate.cache_stats["misses"] - before["misses"] >= 1
