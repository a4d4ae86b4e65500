"""Portrait decoding: any common still format -> upright 8-bit RGB, sized for the output video."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import AvatarError

MIN_SIDE = 64

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff_image(data: bytes) -> str | None:
    """The image format from the bytes themselves (extensions and Content-Type are never trusted)."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _describe_unknown(data: bytes) -> str:
    head = data[:256].lstrip().lower()
    if head.startswith(b"<?xml") or b"<svg" in head:
        return "SVG is not supported; send a PNG, JPEG or WebP"
    if data[4:8] == b"ftyp":
        return "HEIC/AVIF/MP4 containers are not supported for images; send a PNG, JPEG or WebP"
    if head.startswith((b"<!doctype", b"<html")):
        return "the image input is an HTML page, not an image"
    return "the image input is not a PNG, JPEG, WebP, GIF, BMP or TIFF file"


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent -> white, not black
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decode to an upright RGB uint8 array (EXIF orientation applied, first frame of animations)."""
    fmt = sniff_image(data)
    if fmt is None:
        raise AvatarError("unsupported_media", _describe_unknown(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise AvatarError(
                    "input_too_large", f"image is {width}x{height} pixels, over the {max_pixels}-pixel limit"
                )
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            img.load()
            rgb = _to_rgb(img)
    except AvatarError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AvatarError("input_too_large", "image is a decompression bomb (too many pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise AvatarError("unsupported_media", f"the {fmt} image is corrupt or truncated ({exc})") from None
    if min(rgb.size) < MIN_SIDE:
        raise AvatarError(
            "invalid_input", f"image is {rgb.size[0]}x{rgb.size[1]}; at least {MIN_SIDE}x{MIN_SIDE} is needed"
        )
    return np.asarray(rgb, dtype=np.uint8)


def output_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the long side `long_side`, aspect kept, both even (yuv420p needs even sizes)."""
    scale = long_side / max(width, height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def fit_image(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """Resize the portrait to the output frame size (Lanczos; area-averaging when shrinking)."""
    h, w = rgb.shape[:2]
    ow, oh = output_size(w, h, long_side)
    if (ow, oh) == (w, h):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((ow, oh), Image.LANCZOS, reducing_gap=3.0))
