#!/usr/bin/env python
"""Render the bundled demo and write a contact sheet of evenly spaced frames (docs/contact_sheet.png),
plus a 4x close-up of the mouth (docs/mouth_closeup.png).

The close-up has one row per portrait: the bundled one, the same face with its mouth closed (so the
engine has to draw teeth), and a darker skin tone; columns: the portrait, then rendered frames at
rest (silence), at a lip closure, at the widest open vowel and at the most rounded vowel.

    python scripts/contact_sheet.py [--out docs/contact_sheet.png] [--closeup docs/mouth_closeup.png] [--frames 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def demo_sheet(out: Path, n_frames: int, zoom: float) -> None:
    """Eight frames of the demo render (the whole pipeline, encoded and decoded)."""
    from avatar_engine.pipeline import LocalInputs, render
    from avatar_engine.schema import parse_request

    with tempfile.TemporaryDirectory() as tmp:
        mp4 = Path(tmp) / "demo.mp4"
        req = parse_request({"seed": 7, "output": {"delivery": "path"}}, local=True)
        result = render(req, local=LocalInputs((REPO / "assets" / "astronaut_512.png").read_bytes(),
                                      (REPO / "assets" / "speech_16k.wav").read_bytes()), out_path=str(mp4))
        with av.open(str(mp4)) as c:
            frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    x0, y0, x1, y1 = result["face_box"]
    side = int(max(x1 - x0, y1 - y0) * zoom)
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2 + 0.1 * side)
    tiles = []
    for i in np.linspace(0, len(frames) - 1, n_frames).round().astype(int):
        t, rgb = frames[i]
        h, w = rgb.shape[:2]
        top, left = int(np.clip(cy - side // 2, 0, h - side)), int(np.clip(cx - side // 2, 0, w - side))
        tile = Image.fromarray(rgb[top:top + side, left:left + side])
        ImageDraw.Draw(tile).text((6, 4), f"{t:.2f}s", fill=(255, 255, 255))
        tiles.append(tile)
    _save_grid(tiles, min(4, len(tiles)), out)


def _save_grid(tiles: list[Image.Image], cols: int, out: Path) -> None:
    rows = (len(tiles) + cols - 1) // cols
    tw, th = tiles[0].size
    sheet = Image.new("RGB", (cols * tw, rows * th), (0, 0, 0))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * tw, (k // cols) * th))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    print(f"wrote {out} ({len(tiles)} tiles)")


def portrait_variants(image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The bundled portrait, the same face with its lips closed by the engine's rig (no teeth
    showing), and a darker skin tone (a tint, the lips and teeth darkened with it)."""
    from avatar_engine.engines.parametric.engine import render_frame
    from avatar_engine.engines.parametric.paint import mouth_model
    from avatar_engine.engines.parametric.rig import FaceRig
    from avatar_engine.face.locate import locate_face

    points, _ = locate_face(image)
    rig = FaceRig(image, points)
    closed = render_frame(rig, mouth_model(image, points, rig.face_h), {"close": 1.0})
    darker = np.clip(image.astype(np.float32) * np.array([0.52, 0.4, 0.33]) + 8, 0, 255).astype(np.uint8)
    return [("portrait", image), ("lips closed", closed), ("darker tone", darker)]


def closeup_row(image: np.ndarray, wav: bytes, zoom: int = 4) -> list[Image.Image]:
    """The portrait's mouth and four rendered mouths (rest, closure, open vowel, rounded vowel) at `zoom`x."""
    from avatar_engine.audio.frames import frame_count
    from avatar_engine.audio.io import decode_audio
    from avatar_engine.engines import ENGINES
    from avatar_engine.engines.base import RenderJob
    from avatar_engine.face import regions as R
    from avatar_engine.schema import parse_request
    from avatar_engine.settings import Settings

    audio = decode_audio(wav, max_seconds=300, min_seconds=0.2)
    req = parse_request({"still": True, "seed": 7}, local=True)
    n = frame_count(audio.duration_s, 25)
    job = RenderJob(request=req, image=image, audio=audio, fps=25, n_frames=n, settings=Settings())
    motion = ENGINES["parametric"].motion(job, animate_mouth=True)
    frames = [frame for frame, _ in motion.frames()]
    track = motion.track
    picks = [("rest", int(np.argmin(track.open + track.closed + track.round + track.loudness))),
             ("closure", int(np.argmax(track.closed - track.open))), ("open vowel", int(np.argmax(track.open))),
             ("rounded vowel", int(np.argmax(track.round * (track.open > 0.15))))]
    xy = motion.rig.points
    lips = xy[R.LIPS_OUTER_UPPER + R.LIPS_OUTER_LOWER]
    cx, cy = lips.mean(0)
    half_w = int(0.75 * np.ptp(lips[:, 0]))
    half_h = int(0.55 * half_w)
    y0, x0 = int(cy - 0.8 * half_h), int(cx - half_w)

    def tile(rgb: np.ndarray, label: str) -> Image.Image:
        crop = rgb[y0:y0 + 2 * half_h, x0:x0 + 2 * half_w]
        img = Image.fromarray(crop).resize((crop.shape[1] * zoom, crop.shape[0] * zoom), Image.BICUBIC)
        ImageDraw.Draw(img).text((6, 4), label, fill=(255, 255, 255))
        return img

    return [tile(image, "portrait")] + [tile(frames[i], f"{name} ({i / 25:.2f}s)") for name, i in picks]


def closeup_sheet(out: Path) -> None:
    from avatar_engine.media.image import decode_image, fit_image
    from scripts.bench import speech_clip

    image = fit_image(decode_image((REPO / "assets" / "astronaut_512.png").read_bytes(), max_pixels=10 ** 8), 512)
    wav = _with_pause(speech_clip(6.5))  # the demo speech, a pause (the rest frame), its start again
    tiles = []
    for _, variant in portrait_variants(image):
        row = closeup_row(variant, wav)
        tiles.extend(_resize_all(row, tiles[0].size if tiles else row[0].size))
    _save_grid(tiles, 5, out)


def _with_pause(wav: bytes) -> bytes:
    """1 s of silence inserted after the first 5.9 s (the bundled speech), as a 16 kHz WAV."""
    import io
    import wave

    with wave.open(io.BytesIO(wav)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    cut = int(5.9 * 16000)
    pcm = np.concatenate([pcm[:cut], np.zeros(16000, "<i2"), pcm[cut:]])
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm.tobytes())
    return buf.getvalue()


def _resize_all(row: list[Image.Image], size: tuple[int, int]) -> list[Image.Image]:
    return [t if t.size == size else t.resize(size, Image.BICUBIC) for t in row]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs" / "contact_sheet.png"))
    parser.add_argument("--closeup", default=str(REPO / "docs" / "mouth_closeup.png"))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--zoom", type=float, default=2.4, help="tile side as a multiple of the face box")
    parser.add_argument("--only", choices=("demo", "closeup"), help="write one of the two sheets")
    args = parser.parse_args()
    if args.only != "closeup":
        demo_sheet(Path(args.out), args.frames, args.zoom)
    if args.only != "demo":
        closeup_sheet(Path(args.closeup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
