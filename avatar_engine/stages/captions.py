"""Caption burn-in (`captions_burn: true`) as a frame stage: the cue of each moment drawn near the bottom.

The cues come from the clip's word timings (speech/captions.py; the words were made when the speech was
decoded). It runs after restoration, so GFPGAN never repaints the text. Burn-in draws with DejaVu Sans
when the system has it (Debian `fonts-dejavu-core`: Latin, Greek, Cyrillic) and otherwise with the
scalable font bundled in Pillow (>= 10.1, `load_default(size=)`: Latin only).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..speech.captions import Cue, audio_cues
from .base import FrameStage, Need

if TYPE_CHECKING:
    from ..engines.base import RenderJob

_SYSTEM_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf")




@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    for path in _SYSTEM_FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _wrap(text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def _overlay(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(RGB patch, alpha 0..1, top row) of one cue: white text on a translucent dark band."""
    from PIL import Image, ImageDraw

    size = max(12, height // 20)
    font = _font(size)
    lines = _wrap(text, font, int(width * 0.9))
    line_h = int(size * 1.25)
    pad = size // 2
    band_h = line_h * len(lines) + 2 * pad
    image = Image.new("RGBA", (width, band_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    widest = max(font.getlength(line) for line in lines)
    left = int((width - widest) / 2) - pad
    draw.rounded_rectangle([left, 0, width - left, band_h - 1], radius=pad, fill=(0, 0, 0, 150))
    for k, line in enumerate(lines):
        draw.text((width / 2, pad + k * line_h), line, font=font, fill=(255, 255, 255, 255), anchor="ma",
                  stroke_width=max(1, size // 16), stroke_fill=(0, 0, 0, 255))
    rgba = np.asarray(image)
    top = max(0, height - band_h - height // 16)
    return rgba[..., :3].astype(np.float32), rgba[..., 3:].astype(np.float32) / 255.0, top


def burn_captions(frames: Iterator[np.ndarray], cues: list[Cue], fps: float) -> Iterator[np.ndarray]:
    """The frames with the cue on screen at each frame's midpoint drawn near the bottom."""
    drawn: dict[int, tuple] = {}
    for i, frame in enumerate(frames):
        t = (i + 0.5) / fps
        k = next((k for k, c in enumerate(cues) if c.start_s <= t < c.end_s), None)
        if k is not None:
            h, w = frame.shape[:2]
            if k not in drawn:
                drawn = {k: _overlay(cues[k].text, w, h)}  # one cue at a time: memory stays flat
            rgb, alpha, top = drawn[k]
            rows = min(rgb.shape[0], h - top)
            region = frame[top:top + rows].astype(np.float32)
            frame = frame.copy()
            frame[top:top + rows] = (region * (1 - alpha[:rows]) + rgb[:rows] * alpha[:rows] + 0.5).astype(np.uint8)
        yield frame


class CaptionStage(FrameStage):
    """`captions`: the request's words burned into the frames, the last step before encoding."""

    name = "captions"
    license = "no model; DejaVu Sans (Bitstream Vera license) or Pillow's bundled font"
    in_chain = False  # an overlay: the chain names what drew the face

    def need(self, request, *, listed: bool) -> Need:
        return Need.REQUIRED if request.captions_burn else Need.OFF

    def load(self, job: RenderJob, need: Need, warnings: list[str]) -> list[Cue]:
        return audio_cues(job.audio)

    def apply(self, frames: Iterator[np.ndarray], job: RenderJob, loaded: list[Cue]) -> Iterator[np.ndarray]:
        return burn_captions(frames, loaded, job.fps)
