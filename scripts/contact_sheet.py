#!/usr/bin/env python
"""Render the bundled demo and write a contact sheet of evenly spaced frames (docs/contact_sheet.png).

    python scripts/contact_sheet.py [--out docs/contact_sheet.png] [--frames 8]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(REPO / "docs" / "contact_sheet.png"))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--zoom", type=float, default=2.4, help="tile side as a multiple of the face box")
    args = parser.parse_args()

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
    side = int(max(x1 - x0, y1 - y0) * args.zoom)
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2 + 0.1 * side)
    picks = np.linspace(0, len(frames) - 1, args.frames).round().astype(int)
    tiles = []
    for i in picks:
        t, rgb = frames[i]
        h, w = rgb.shape[:2]
        top, left = int(np.clip(cy - side // 2, 0, h - side)), int(np.clip(cx - side // 2, 0, w - side))
        tile = Image.fromarray(rgb[top:top + side, left:left + side])
        ImageDraw.Draw(tile).text((6, 4), f"{t:.2f}s", fill=(255, 255, 255))
        tiles.append(tile)
    cols = min(4, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    tw, th = tiles[0].size
    sheet = Image.new("RGB", (cols * tw, rows * th), (0, 0, 0))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * tw, (k // cols) * th))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({len(tiles)} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
