"""The inside of the mouth: what a warp cannot invent when the lips part.

Built once per clip from the portrait (`mouth_model`), applied per frame in the portrait's own
geometry, before the head moves (`paint_mouth`):
- the portrait's own mouth interior is split into what hangs from the skull (upper teeth) and what
  rides on the jaw (lower teeth) at the darkest row between them; when the jaw drops, the lower part
  moves with it, the upper part stays, and newly uncovered area continues each part's texture;
- a portrait that shows no teeth gets drawn ones: one shape per tooth, shaded towards the corners,
  coloured from the portrait's brightness and colourfulness, blurred to the portrait's softness;
- between them the cavity is shaded with depth (darker inwards, a soft tongue low down), the lips'
  inner edges shade as they roll, and every drawn pixel carries the portrait's own grain.
With the mouth at its rest pose nothing is painted: a rest frame is the portrait.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...face import regions as R
from ...face.blend import smoothstep, smoothstep1

_SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
_CAVITY_DEEP = np.array([12, 5, 6], np.float32)
_CAVITY_NEAR = np.array([56, 25, 27], np.float32)
_DEFAULT_TEETH = np.array([226, 218, 204], np.float32)
_TONGUE = np.array([126, 58, 62], np.float32)
_SS = 4  # supersampling of drawn teeth


@dataclass(frozen=True)
class MouthStyle:
    """Colours taken from the portrait once per clip, so painted parts match the person."""

    upper_lip: np.ndarray
    lower_lip: np.ndarray
    teeth: np.ndarray
    cavity_deep: np.ndarray
    cavity_near: np.ndarray
    tongue: np.ndarray

    @property
    def seam(self) -> np.ndarray:
        """The contact line of pressed lips: the lips' colour in shadow (hue kept, a little deeper)."""
        lip = (self.upper_lip + self.lower_lip) / 2
        return lip * np.array([0.62, 0.5, 0.5], np.float32)

    @property
    def gum(self) -> np.ndarray:
        return self.upper_lip * np.array([0.85, 0.62, 0.64], np.float32)


def _poly(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _fill(shape: tuple[int, int], outline: np.ndarray, aa: bool = True) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [_poly(outline)], 255, cv2.LINE_AA if aa else cv2.LINE_8, _SHIFT)
    return mask


def _region_pixels(image: np.ndarray, outline: np.ndarray) -> np.ndarray:
    return image[_fill(image.shape[:2], outline, aa=False) > 0].astype(np.float32)


def _inner_outline(xy: np.ndarray) -> np.ndarray:
    return np.concatenate([xy[R.LIPS_INNER_UPPER], xy[R.LIPS_INNER_LOWER][::-1][1:-1]])


def mouth_style(image: np.ndarray, landmarks: np.ndarray) -> MouthStyle:
    """Lip colours (median of each lip), teeth colour (the portrait's own if it shows teeth), and a
    cavity, tongue and teeth as bright and as colourful as the portrait's lips (grey for a grey one)."""
    xy = landmarks[:, :2]
    upper = _region_pixels(image, np.concatenate([xy[R.LIPS_OUTER_UPPER], xy[R.LIPS_INNER_UPPER][::-1]]))
    lower = _region_pixels(image, np.concatenate([xy[R.LIPS_OUTER_LOWER], xy[R.LIPS_INNER_LOWER][::-1]]))
    inner = _region_pixels(image, _inner_outline(xy))
    lip_default = np.array([170, 95, 95], np.float32)
    up = np.median(upper, 0) if len(upper) else lip_default
    lo = np.median(lower, 0) if len(lower) else lip_default
    light = float(np.clip(np.concatenate([up, lo]).mean() / 125.0, 0.45, 1.15))  # lit or shadowed face
    teeth = _DEFAULT_TEETH * min(1.0, 0.35 + 0.6 * light)
    deep, near = _CAVITY_DEEP * light, _CAVITY_NEAR * light
    if len(inner) >= 12:
        lum = inner.sum(1)
        bright = inner[lum >= np.percentile(lum, 70)]
        candidate = np.median(bright, 0)
        if candidate.mean() > 110 and np.ptp(candidate) < 70:  # light and greyish: visible teeth
            teeth = 0.8 * candidate + 0.2 * teeth
        dark = np.median(inner[lum <= np.percentile(lum, 10)], 0)
        if dark.mean() < near.mean():  # the portrait's own shadow inside the mouth
            deep, near = 0.5 * (deep + 0.6 * dark), 0.5 * (near + dark)
    # a black-and-white (or tinted) portrait gets a mouth with as little colour as its lips have
    chroma = float(np.clip(np.ptp(np.concatenate([up, lo]).reshape(2, 3), axis=1).mean() / 60.0, 0.0, 1.0))

    def tone(color: np.ndarray) -> np.ndarray:
        grey = np.full(3, color.mean(), np.float32)
        return (grey + (color - grey) * chroma).astype(np.float32)

    return MouthStyle(upper_lip=up, lower_lip=lo, teeth=tone(teeth), cavity_deep=tone(deep),
                      cavity_near=tone(near), tongue=tone(_TONGUE * light))


@dataclass(frozen=True)
class MouthModel:
    """Everything per clip, in the coordinates of a box around the mouth (`origin` = its top left)."""

    origin: tuple[int, int]  # (x, y) of the box in the image
    upper_rest: np.ndarray  # inner upper lip at rest, box coordinates
    lower_rest: np.ndarray
    upper: np.ndarray  # (h, w, 3) what hangs from the skull: upper teeth, the area above continued
    upper_alpha: np.ndarray  # (h, w)
    lower: np.ndarray  # what rides on the jaw: lower teeth, the area below continued
    lower_alpha: np.ndarray
    grain: np.ndarray  # (h, w, 3) the portrait's own noise level, a fixed pattern
    style: MouthStyle
    face_h: float
    own_teeth: bool  # the layers are the portrait's own mouth (else drawn teeth)
    soft: float = 0.0  # px of blur the portrait's edges have (painted edges get as much)

    @property
    def shape(self) -> tuple[int, int]:
        return self.upper_alpha.shape

    @property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) of the box as float32 arrays, made once."""
        cached = self.__dict__.get("_grid")
        if cached is None:
            h, w = self.shape
            cached = tuple(np.mgrid[0:h, 0:w].astype(np.float32))
            object.__setattr__(self, "_grid", cached)
        return cached


def _lip_lines(upper: np.ndarray, lower: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row of the inner upper / lower lip edge for every column of a box (clamped at the corners)."""
    cols = np.arange(width, dtype=np.float64)
    ou, ol = np.argsort(upper[:, 0]), np.argsort(lower[:, 0])
    return (np.interp(cols, upper[ou, 0], upper[ou, 1]), np.interp(cols, lower[ol, 0], lower[ol, 1]))


def _split_rows(box: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> tuple[np.ndarray, bool]:
    """Per column, the row between upper and lower teeth (the bite line): a clearly dark band in the
    lower part of the gap (the middle columns' mean profile, in fractions of the lip gap: one
    consistent curve, not a noisy per-column pick); without one the interior is all upper teeth (a
    smile), and the jaw gets drawn lower teeth (second value False)."""
    lum = cv2.GaussianBlur(box.mean(axis=2), (0, 0), 0.8)
    gap = bottom - top
    cols = np.flatnonzero(gap >= 3)
    best = 0.96
    if cols.size >= 3:
        mid = cols[(cols >= np.percentile(cols, 20)) & (cols <= np.percentile(cols, 80))]
        fractions = np.linspace(0.2, 0.92, 37)
        rows = top[mid][None, :] + fractions[:, None] * gap[mid][None, :]
        samples = cv2.remap(lum.astype(np.float32), np.broadcast_to(mid[None, :], rows.shape).astype(np.float32),
                            rows.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        profile = samples.mean(axis=1)
        low = fractions >= 0.45
        k = int(np.argmin(np.where(low, profile, np.inf)))
        if profile[k] < 0.7 * np.median(profile):  # a dark band: the gap between the rows of teeth
            best = float(fractions[k])
    return np.clip(top + best * gap, top, np.maximum(top, bottom)), best < 0.9


def _own_layers(box: np.ndarray, top: np.ndarray, bottom: np.ndarray):
    """The portrait's own interior split at the bite line: inside the rest contour each layer is the
    portrait exactly; beyond it the teeth's texture continues (rows 1.5 px inside the lip edge)."""
    h, w = box.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    t, b = top.astype(np.float32)[None, :], bottom.astype(np.float32)[None, :]
    upper = cv2.remap(box, xs, np.where(ys < t, t + 1.5, ys), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lower = cv2.remap(box, xs, np.where(ys > b, b - 1.5, ys), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    split_rows, lower_teeth = _split_rows(box, top, bottom)
    split = split_rows.astype(np.float32)[None, :]
    return upper, np.clip(split + 0.5 - ys, 0, 1), lower, np.clip(ys - split + 0.5, 0, 1), lower_teeth


# tooth edges from the middle to the corner (fraction of the half mouth width) and relative lengths
_UPPER_TEETH = (np.array([0, .19, .35, .49, .61, .72, .82, .91, 1.0]), np.array([1, .9, .93, .78, .7, .6, .55, .5]))
_LOWER_TEETH = (np.array([0, .13, .27, .41, .54, .67, .8, .9, 1.0]), np.array([1, 1, .95, .85, .75, .65, .6, .55]))


def _teeth_row(shape, edge: np.ndarray, length: float, center: float, half: float, teeth, style: MouthStyle,
               hanging: bool, blur: float) -> tuple[np.ndarray, np.ndarray]:
    """One row of drawn teeth along the lip line `edge` (box rows per column): per-tooth length, rounded
    tips, dark gaps between teeth, shading towards the corners and towards the gum; drawn at `_SS`x and
    reduced, then softened by `blur` px like the portrait. Beyond the lip line: gum."""
    h, w = shape
    bounds, lengths = teeth
    xs = (np.arange(w * _SS) + 0.5) / _SS - 0.5
    ys = ((np.arange(h * _SS) + 0.5) / _SS - 0.5)[:, None]
    u = np.abs(xs - center) / max(half, 1.0)
    k = np.clip(np.searchsorted(bounds, u, side="right") - 1, 0, len(lengths) - 1)
    t = np.clip((u - bounds[k]) / (bounds[k + 1] - bounds[k]), 0, 1)
    tip = length * lengths[k] * (1 - 0.35 * (2 * t - 1) ** 8) * np.sqrt(np.clip(1 - u ** 2, 0, 1))
    line = np.repeat(edge, _SS)[None, :]
    into = (ys - line) if hanging else (line - ys)  # depth from the lip line towards the tips
    alpha = np.clip((tip[None, :] - into) * _SS / 2 + 0.5, 0, 1) * (u < 1.0)[None, :]
    tooth_w = (bounds[k + 1] - bounds[k]) * half
    gap = np.exp(-((np.minimum(t, 1 - t) * tooth_w) / 0.6) ** 2)
    own_tone = 1.0 + 0.035 * np.sin(7.3 * k + 1.1)  # no two teeth exactly alike
    shade = (1.0 - 0.45 * u ** 2) * (0.94 + 0.06 * np.sin(np.pi * t)) * (1 - 0.22 * gap) * own_tone
    gum_side = smoothstep(into / max(0.35 * length, 1.0))
    tip_side = smoothstep((into - 0.8 * tip[None, :]) / max(0.2 * length, 0.5))  # translucent edge
    vertical = (0.9 + 0.1 * gum_side) * (1 - 0.12 * tip_side)
    teeth_color = style.teeth if hanging else style.teeth * np.array([0.98, 0.93, 0.85], np.float32)  # in shadow
    color = teeth_color[None, None, :] * (shade[None, :] * vertical)[..., None]
    gum = style.gum if hanging else style.lower_lip * np.array([0.8, 0.6, 0.62], np.float32)
    root = -0.3 * length if hanging else 0.0  # upper teeth run on under the lip before the gum shows
    color = np.where((into < root)[..., None], gum, color)
    alpha = np.where(into < 0, 1.0, alpha)
    color = cv2.resize(color.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    if blur > 0.3:
        color, alpha = cv2.GaussianBlur(color, (0, 0), blur), cv2.GaussianBlur(alpha, (0, 0), blur)
    return color, alpha


def _drawn_layers(shape, upper: np.ndarray, lower: np.ndarray, top: np.ndarray, bottom: np.ndarray,
                  style: MouthStyle, face_h: float, blur: float):
    center = float((upper[0, 0] + upper[-1, 0]) / 2)
    half = float(abs(upper[-1, 0] - upper[0, 0]) / 2)
    up, ua = _teeth_row(shape, top, 0.036 * face_h, center, half, _UPPER_TEETH, style, True, blur)
    # the lower row shows only in front: the lower lip and the cheeks hide the rest
    lo, la = _teeth_row(shape, bottom, 0.02 * face_h, center, 0.66 * half, _LOWER_TEETH, style, False, blur)
    return up, ua, lo, la


def _grain(image: np.ndarray, box: tuple[int, int, int, int], shape) -> np.ndarray:
    """A fixed noise pattern as strong as the portrait's own fine grain around the mouth. Edges (lips,
    teeth) inflate a plain deviation, so the level comes from the quietest third of the residual."""
    y0, y1, x0, x1 = box
    patch = image[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    residual = np.abs(patch - cv2.GaussianBlur(patch, (0, 0), 1.0))
    sigma = float(np.clip(np.percentile(residual, 30) / 0.385, 0.3, 6.0))  # |N(0, s)|: 30th pct = 0.385 s
    rng = np.random.default_rng(12345)
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 0.5) * (1.6 * sigma)
    return noise[..., None] + rng.standard_normal(shape + (3,)).astype(np.float32) * (0.25 * sigma)


def _softness(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """How soft the portrait is (px of Gaussian blur a drawn edge should get): sharp photos keep
    energy in the finest detail, upscaled or blurred ones lose it."""
    y0, y1, x0, x1 = box
    grey = image[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
    fine = float(np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 0.7)).mean())
    coarse = float(np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 2.0)).mean()) + 1e-6
    return float(np.clip(1.6 - 3.0 * fine / coarse, 0.4, 1.4))


def mouth_model(image: np.ndarray, landmarks: np.ndarray, face_h: float) -> MouthModel:
    """The per-clip mouth: a box around the lips with room for the jaw to drop, the rest lip lines,
    the upper/lower layers (the portrait's own teeth, or drawn ones), its grain and its colours."""
    xy = landmarks[:, :2]
    h_img, w_img = image.shape[:2]
    lips = xy[R.LIPS_OUTER_UPPER + R.LIPS_OUTER_LOWER]
    x0 = int(max(0, np.floor(lips[:, 0].min() - 0.08 * face_h)))
    x1 = int(min(w_img, np.ceil(lips[:, 0].max() + 0.08 * face_h)))
    y0 = int(max(0, np.floor(lips[:, 1].min() - 0.05 * face_h)))
    y1 = int(min(h_img, np.ceil(lips[:, 1].max() + 0.16 * face_h)))
    box = image[y0:y1, x0:x1].astype(np.float32)
    shape = box.shape[:2]
    origin = np.array([x0, y0], np.float64)
    upper, lower = xy[R.LIPS_INNER_UPPER] - origin, xy[R.LIPS_INNER_LOWER] - origin
    top, bottom = _lip_lines(upper, lower, shape[1])
    style = mouth_style(image, landmarks)
    interior = _fill(shape, np.concatenate([upper, lower[::-1][1:-1]]))
    gap = float(np.linalg.norm(lower[5] - upper[5]))
    own = gap >= 0.02 * face_h and int((interior > 127).sum()) >= 20
    soft = _softness(image, (y0, y1, x0, x1))
    drawn = _drawn_layers(shape, upper, lower, top, bottom, style, face_h, soft)
    if own:
        up, ua, lo, la, lower_teeth = _own_layers(box, top, bottom)
        layers = (up, ua, lo, la) if lower_teeth else (up, ua, drawn[2], drawn[3])
    else:
        layers = drawn
    return MouthModel((x0, y0), upper, lower, *layers, grain=_grain(image, (y0, y1, x0, x1), shape),
                      style=style, face_h=face_h, own_teeth=own, soft=soft)


def _cavity(dist: np.ndarray, upper: np.ndarray, lower: np.ndarray, model: MouthModel) -> np.ndarray:
    """The open mouth's inside: near-colour at the lips, darker with depth (`dist`: px from the lips),
    a soft tongue low down, with the portrait's grain."""
    style, face_h = model.style, model.face_h
    gap = float(np.linalg.norm(lower[5] - upper[5]))
    depth = smoothstep(dist / max(0.32 * gap, 1.0))[..., None]
    # a narrow parting shows the lips' own shadowed inner edge, not a black slot
    near = style.seam + (style.cavity_near - style.seam) * smoothstep1(gap / (0.035 * face_h))
    color = near + (style.cavity_deep - near) * depth * smoothstep1(gap / (0.05 * face_h))
    visible = smoothstep1((gap - 0.03 * face_h) / (0.04 * face_h))
    if visible > 0:
        ys, xs = model.grid
        cx, cy = float(lower[5, 0]), float(lower[5, 1] - 0.32 * gap)
        ax, ay = 0.34 * float(abs(upper[-1, 0] - upper[0, 0])), 0.3 * gap
        tongue = np.exp(-((xs - cx) / ax) ** 2 - (np.minimum(ys - cy, 0) / ay) ** 2) * (0.75 * visible)
        color = color + (style.tongue - color) * tongue[..., None]
    return color + model.grain


def _jaw_map(model: MouthModel, jaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates of the jaw layer: every column moves with the lower lip's jaw displacement."""
    h, w = model.shape
    order = np.argsort(model.lower_rest[:, 0])
    cols = np.arange(w, dtype=np.float64)
    jx = np.interp(cols, model.lower_rest[order, 0], jaw[order, 0]).astype(np.float32)
    jy = np.interp(cols, model.lower_rest[order, 0], jaw[order, 1]).astype(np.float32)
    ys, xs = model.grid
    return xs - jx[None, :], ys - jy[None, :]


def _interior(model: MouthModel, upper: np.ndarray, lower: np.ndarray, jaw: np.ndarray,
              inside: np.ndarray, moved: float) -> np.ndarray:
    """Teeth over cavity: the skull's layer fixed, the jaw's layer moved, both fading into the dark
    of a thin gap as the lips meet, shaded where the lips shadow them (as far as the mouth moved)."""
    mx, my = _jaw_map(model, jaw)
    lower_layer = cv2.remap(model.lower, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lower_alpha = cv2.remap(model.lower_alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    upper_layer, upper_alpha = model.upper, model.upper_alpha
    if not model.own_teeth:  # drawn teeth carry the portrait's grain too
        lower_layer, upper_layer = lower_layer + model.grain, upper_layer + model.grain
    top, bottom = _lip_lines(upper, lower, model.shape[1])
    visible = smoothstep((bottom - top - 0.008 * model.face_h) / (0.02 * model.face_h)).astype(np.float32)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    out = _cavity(dist, upper, lower, model)
    out = out + (lower_layer - out) * (lower_alpha * visible)[..., None]
    out = out + (upper_layer - out) * (upper_alpha * visible)[..., None]
    if moved > 0:
        out *= (1.0 - 0.28 * moved * np.exp(-dist / (0.012 * model.face_h)))[..., None]
    return out


def _seam(frame_region: np.ndarray, upper: np.ndarray, lower: np.ndarray, strength: float,
          model: MouthModel) -> np.ndarray:
    """Pressed lips: each column between the lips is filled from the lip just above to the lip just
    below (covering whatever the warp squeezed between them), with a soft contact line."""
    h, w = frame_region.shape[:2]
    top, bottom = _lip_lines(upper, lower, w)
    reach = max(1.5, 0.012 * model.face_h)
    above, below = (top - reach).astype(np.float32), (bottom + reach).astype(np.float32)
    ys, xs = model.grid
    t = np.clip((ys - above) / np.maximum(below - above, 1.0), 0, 1)
    col = np.broadcast_to(xs[:1], (1, w))
    upper_row = cv2.remap(frame_region, col, above[None, :] - 1, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lower_row = cv2.remap(frame_region, col, below[None, :] + 1, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fill = upper_row + (lower_row - upper_row) * t[..., None]
    band = np.clip(ys - above + 0.5, 0, 1) * np.clip(below - ys + 0.5, 0, 1)
    if model.soft > 0.6:
        band = cv2.GaussianBlur(band, (0, 0), model.soft)
    band = band[..., None] * strength
    out = frame_region * (1 - band) + fill * band
    seam = np.zeros((h, w), np.uint8)
    cv2.polylines(seam, [_poly((upper + lower) / 2)], False, 255, 1, cv2.LINE_AA, _SHIFT)
    line = cv2.GaussianBlur(seam, (0, 0), max(0.45, model.face_h / 260)).astype(np.float32) / 255.0
    mid, half = float((upper[0, 0] + upper[-1, 0]) / 2), max(float(abs(upper[-1, 0] - upper[0, 0]) / 2), 1.0)
    fade = 0.55 + 0.45 * np.clip(1 - ((xs[:1] - mid) / half) ** 2, 0, 1)  # deepest in the middle
    line = (np.minimum(1.0, 1.3 * line) * fade * (0.7 * strength))[..., None]
    return out * (1 - line) + model.style.seam * line


def paint_mouth(frame: np.ndarray, landmarks: np.ndarray, jaw: np.ndarray, closed: float,
                model: MouthModel) -> None:
    """Paint the mouth (in place) for the frame's landmark positions in the portrait's geometry.

    `jaw`: the lower inner lip's displacement by the jaw alone (the lower teeth follow it); `closed`:
    how far the lips are pressed together (0 at rest). Nothing happens at the rest pose.
    """
    origin = np.array(model.origin, np.float64)
    upper, lower = landmarks[R.LIPS_INNER_UPPER, :2] - origin, landmarks[R.LIPS_INNER_LOWER, :2] - origin
    shift = max(float(np.abs(upper - model.upper_rest).max()), float(np.abs(lower - model.lower_rest).max()))
    if shift < 0.05 and closed <= 0:
        return
    face_h = model.face_h
    moved = smoothstep1(shift / (0.03 * face_h))
    (x0, y0), (h, w) = model.origin, model.shape
    region = frame[y0:y0 + h, x0:x0 + w].astype(np.float32)
    mask = _fill((h, w), np.concatenate([upper, lower[::-1][1:-1]]))
    inside = (mask > 127).astype(np.uint8)
    alpha = mask.astype(np.float32) / 255.0
    if model.soft > 0.6:  # a soft (upscaled, blurred) portrait: the mouth's edge as soft as its others
        alpha = cv2.GaussianBlur(alpha, (0, 0), model.soft)
    alpha = alpha[..., None]
    out = _interior(model, upper, lower, jaw, inside, moved)
    if moved > 0:  # the lips' inner edges roll in and shade as the mouth moves
        outside = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
        region *= (1.0 - 0.12 * moved * np.exp(-outside / (0.006 * face_h)))[..., None]
    gap = float(np.linalg.norm(lower[5] - upper[5]))
    seam_strength = closed * float(np.clip(1.0 - gap / (0.02 * face_h + 1e-6), 0, 1))
    out = region * (1 - alpha) + out * alpha
    if seam_strength > 0:
        out = _seam(out, upper, lower, seam_strength, model)
    frame[y0:y0 + h, x0:x0 + w] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


_LASH = np.array([52, 36, 32], np.float32)
_EYES = ((R.EYE_R_UPPER, R.EYE_R_LOWER), (R.EYE_L_UPPER, R.EYE_L_LOWER))


def paint_eyelids(frame: np.ndarray, open_landmarks: np.ndarray, closure: float) -> None:
    """Cover the eyes with lid skin as a blink completes (in place).

    The warp lowers the lid; at small face sizes that alone leaves a sliver of iris, so near full
    closure the eye opening is filled with skin cloned from just above it, plus a lash line.
    `open_landmarks` are the frame's landmark positions without the blink.
    """
    if closure <= 0.35:
        return
    strength = smoothstep1((closure - 0.35) / 0.55)
    h_img, w_img = frame.shape[:2]
    for upper_ids, lower_ids in _EYES:
        up, lo = open_landmarks[upper_ids, :2], open_landmarks[lower_ids, :2]
        eye_h = float(np.max(np.linalg.norm(lo - up, axis=1)))
        pad = max(2.0, 0.35 * eye_h)
        outline = np.concatenate([up, lo[::-1]])
        x0, y0 = np.floor(outline.min(0) - pad).astype(int)
        x1, y1 = np.ceil(outline.max(0) + pad).astype(int)
        shift = int(round(eye_h + pad))
        if x0 < 0 or y0 - shift < 0 or x1 > w_img or y1 > h_img or x1 - x0 < 3:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [_poly(outline - [x0, y0])], 255, cv2.LINE_AA, _SHIFT)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        alpha = cv2.GaussianBlur(mask, (0, 0), max(0.6, 0.12 * eye_h)).astype(np.float32)[..., None] / 255.0
        skin = frame[y0 - shift:y1 - shift, x0:x1].astype(np.float32)
        region = frame[y0:y1, x0:x1].astype(np.float32)
        out = region * (1 - alpha * strength) + skin * (alpha * strength)
        lash = np.zeros(mask.shape, np.uint8)
        closed_line = lo + 0.15 * (up - lo)
        cv2.polylines(lash, [_poly(closed_line - [x0, y0])], False, 255, max(1, int(round(eye_h / 6))), cv2.LINE_AA, _SHIFT)
        la = lash.astype(np.float32)[..., None] / 255.0 * (0.75 * strength)
        out = out * (1 - la) + _LASH * la
        frame[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
