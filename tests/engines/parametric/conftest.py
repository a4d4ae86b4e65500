"""The bundled portrait rigged once per test module: image, face points, rig and mouth model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from avatar_engine.engines.parametric.paint import mouth_model
from avatar_engine.engines.parametric.rig import FaceRig
from avatar_engine.face.locate import locate_face


@pytest.fixture(scope="module")
def rigged(portrait_png):
    """The smiling portrait (its own teeth show) as the engine sees it."""
    image = np.asarray(Image.open(io.BytesIO(portrait_png)).convert("RGB"))
    points, _ = locate_face(image)
    rig = FaceRig(image, points)
    return image, points, rig, mouth_model(image, points, rig.face_h)
