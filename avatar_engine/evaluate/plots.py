"""The report's pictures as PNG/JPEG bytes: a strip of frames from a video, mouth opening against speech
loudness, and latency bars. matplotlib (Agg, no display) is imported here only, never by the worker."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from PIL import Image

STAGES = ("fetch", "decode", "prepare", "render", "encode", "qa", "deliver")
STAGE_COLORS = ("#9e9e9e", "#8d6e63", "#ffb74d", "#4fc3f7", "#1e88e5", "#ab47bc", "#66bb6a")
STRIP_FRAMES = 8


def _picked_frames(video: Path, count: int) -> list[Image.Image]:
    """`count` frames spread evenly over the clip (decoded one by one: only the kept ones stay in memory)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    wanted = set(np.linspace(0, max(0, total - 1), count).round().astype(int).tolist())
    with av.open(str(video)) as container:
        frames = [f.to_image() for i, f in enumerate(container.decode(video=0)) if i in wanted]
    if not frames:
        raise ValueError(f"{video.name} has no video frames")
    return frames


def frame_strip(video: Path, *, count: int = STRIP_FRAMES, height: int = 136,
                mouth_box: list[int] | None = None) -> bytes:
    """`count` frames spread over the clip side by side, with a row of mouth close-ups under them when
    `mouth_box` ([x0, y0, x1, y1] in pixels) is given; one JPEG."""
    frames = _picked_frames(video, count)
    rows = [[f.resize((max(1, round(f.width * height / f.height)), height), Image.LANCZOS) for f in frames]]
    if mouth_box:
        rows.append([f.crop(tuple(mouth_box)).resize((rows[0][i].width, height), Image.LANCZOS)
                     for i, f in enumerate(frames)])
    width = sum(t.width for t in rows[0]) + 4 * (len(frames) - 1)
    strip = Image.new("RGB", (width, len(rows) * height + 4 * (len(rows) - 1)), "white")
    for r, row in enumerate(rows):
        x = 0
        for thumb in row:
            strip.paste(thumb, (x, r * (height + 4)))
            x += thumb.width + 4
    buf = io.BytesIO()
    strip.save(buf, "JPEG", quality=82)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def _stage_bars(ax, labels: list[str], timings: list[dict]) -> None:
    """Horizontal stacked bars, one per run, stages in pipeline order (seconds)."""
    y = np.arange(len(labels))
    left = np.zeros(len(labels))
    for stage, color in zip(STAGES, STAGE_COLORS):
        widths = np.array([t.get(stage, 0.0) / 1000 for t in timings])
        if widths.any():
            ax.barh(y, widths, left=left, color=color, label=stage, height=0.6)
            left += widths
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.legend(fontsize=8, ncol=len(STAGES), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)


def _run_bars(ax, run: dict) -> None:
    """One run's latency: each worker stage, the worker's total, end to end, and the first live segment."""
    timings = run.get("timings_ms") or {}
    rows = [(stage, timings[stage] / 1000, color) for stage, color in zip(STAGES, STAGE_COLORS) if stage in timings]
    if "total" in timings:
        rows.append(("worker total", timings["total"] / 1000, "#37474f"))
    rows.append(("end to end", run.get("latency_s") or 0.0, "#000000"))
    if run.get("first_segment_s") is not None:
        rows.append(("1st segment", run["first_segment_s"], "#e53935"))
    y = np.arange(len(rows))
    ax.barh(y, [r[1] for r in rows], color=[r[2] for r in rows], height=0.65)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.grid(axis="x", alpha=0.3)


def scenario_plot(run: dict) -> bytes:
    """Left: mouth opening and speech loudness over time; right: the run's stage timings."""
    plt = _pyplot()
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(11, 2.8), gridspec_kw={"width_ratios": [3, 1.3]},
                                   layout="constrained")
    series = run.get("series") or {}
    mouth = np.array([np.nan if v is None else v for v in series.get("mouth_open", [])], float)
    loud = np.array(series.get("loudness", []), float)
    t = np.arange(len(mouth)) / float(series.get("fps") or 25)
    ax.fill_between(t[:len(loud)], 0, loud[:len(t)], color="#90caf9", alpha=0.6, label="speech loudness (0-1)")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("seconds")
    ax.set_ylabel("loudness", fontsize=8)
    mouth_ax = ax.twinx()
    mouth_ax.plot(t, mouth, color="#d81b60", lw=1.2, label="mouth opening")
    mouth_ax.set_ylabel("mouth opening / face height", fontsize=8)
    top = np.nanmax(mouth) if np.isfinite(mouth).any() else 0.1
    mouth_ax.set_ylim(0, max(0.05, top * 1.1))
    ax.legend(handles=ax.get_legend_handles_labels()[0] + mouth_ax.get_legend_handles_labels()[0],
              fontsize=7, loc="upper right", frameon=False)
    for at in np.linspace(0, max(0, len(mouth) - 1), STRIP_FRAMES).round() / float(series.get("fps") or 25):
        ax.axvline(at, color="#9e9e9e", lw=0.6, ls=":")  # where the strip's frames were taken
    ax.set_title("mouth opening vs speech loudness (dotted: the frames above)", fontsize=9)
    _run_bars(bars, run)
    bars.set_title("latency", fontsize=9)
    return _png(fig)


def latency_overview(runs: list[dict]) -> bytes:
    """Every rendered run's stage timings, one bar each."""
    plt = _pyplot()
    shown = [r for r in runs if r.get("timings_ms")]
    fig, ax = plt.subplots(figsize=(11, 0.32 * max(3, len(shown)) + 1.2), layout="constrained")
    _stage_bars(ax, [r["id"] for r in shown], [r["timings_ms"] for r in shown])
    ax.set_title("worker stage timings per run", fontsize=10, pad=22)
    return _png(fig)
