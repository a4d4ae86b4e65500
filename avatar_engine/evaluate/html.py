"""`report.html`: one self-contained page (inline CSS, pictures as data: URIs, no script, no external
request): the headline, baseline regressions, a summary table, then per run a strip of frames and a
plot of mouth opening against speech loudness with its latency bars."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import av

from . import plots
from .checks import CHECK_NAMES

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#555;font-size:12px}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}td:first-child{white-space:nowrap}.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}
.exp{color:#6d4c41}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}.card b{font-size:18px;display:block}
.regress{border:2px solid #c62828;background:#ffebee;padding:8px 12px;border-radius:6px}
img{max-width:100%;display:block;margin:4px 0}.run{border-top:1px solid #eee;padding-top:6px}
"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _fmt(value, fmt: str = "{:.2f}", dash: str = "–") -> str:
    return dash if value is None else fmt.format(value)


def _checks_cell(run: dict) -> str:
    output = run.get("output") or {}
    if not output:
        return "–"
    failed = [name for name in CHECK_NAMES if not output.get(name)]
    return '<span class="ok">all 4</span>' if not failed else f'<span class="bad">{", ".join(failed)}</span>'


def _status_cell(run: dict) -> str:
    if run["status"] == "ok":
        return '<span class="ok">ok</span>'
    code = html.escape(str((run.get("error") or {}).get("code")))
    css = "exp" if run["status"] == "expected_error" else "bad"
    return f'<span class="{css}" title="{html.escape((run.get("error") or {}).get("message", ""))}">{code}</span>'


def _summary_row(run: dict) -> str:
    sync = run.get("sync") or {}
    head = run.get("head") or {}
    cells = [
        f'<td class="l"><a href="#{html.escape(run["id"])}">{html.escape(run["scenario"])}</a></td>',
        f'<td class="l">{html.escape(run.get("language") or "–")}</td>',
        f'<td class="l">{html.escape("+".join(run.get("chain") or []) or run["engine_requested"])}</td>',
        f'<td class="l">{_status_cell(run)}</td>', f"<td>{_fmt(run.get('audio_s'), '{:.1f}')}</td>",
        f"<td>{_fmt(run.get('latency_s'))}</td>", f"<td>{_fmt(run.get('x_real_time'), '{:.1f}×')}</td>",
        f"<td>{_fmt(run.get('first_segment_s'))}</td>", f"<td>{_fmt(sync.get('offset_ms'), '{:.0f}')}</td>",
        f"<td>{_fmt(sync.get('confidence'), '{:.2f}')}</td>",
        f"<td>{_fmt(run.get('mouth_closed_fraction'), '{:.0%}')}</td>",
        f"<td>{_fmt(run.get('blinks_per_min'), '{:.0f}')}</td>", f"<td>{_fmt(head.get('sway_rms_pct'), '{:.1f}')}</td>",
        f"<td>{_checks_cell(run)}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


SUMMARY_HEAD = ("<tr><th class=l>scenario</th><th class=l>lang</th><th class=l>chain</th><th class=l>status</th>"
                "<th>audio s</th><th>latency s</th><th>× real time</th><th>1st segment s</th><th>A/V offset ms</th>"
                "<th>sync conf.</th><th>silent mouth closed</th><th>blinks/min</th><th>head sway %</th>"
                "<th>output checks</th></tr>")


def _header(report: dict) -> str:
    machine, target, summary = report["machine"], report["target"], report["summary"]
    device = ((target.get("health") or {}).get("device") or {}) if isinstance(target.get("health"), dict) else {}
    gpus = ", ".join(g["name"] for g in machine.get("gpus") or []) or "none"
    where = target.get("where") or "in process"
    cards = [("runs", f"{summary['ok']}/{summary['runs']} ok"), ("languages", ", ".join(summary["languages"])),
             ("median × real time", _fmt(summary["median_x_real_time"], "{:.1f}×")),
             ("median latency", _fmt(summary["median_latency_s"], "{:.2f} s")),
             ("median sync conf.", _fmt(summary["median_sync_confidence"])),
             ("output checks", f"{summary['output_checks_passed']}/{summary['ok']} passed")]
    return (f"<h1>Avatar renderer evaluation</h1><div class=meta>{html.escape(report['started_at'])} · target "
            f"<b>{html.escape(target['kind'])}</b> ({html.escape(where)}) · worker device "
            f"{html.escape(str(device.get('type', '?')))} {html.escape(str(device.get('name') or ''))} · "
            f"evaluator CPU {html.escape(str(machine['cpu']))}, {machine['cores']} cores, GPU {html.escape(gpus)}"
            f" · avatar-renderer {html.escape(str(report['versions'].get('avatar-renderer')))} "
            f"({html.escape(str(report['versions'].get('git')))}) · schema {report['schema_version']}</div>"
            + "<div class=cards>" + "".join(f"<div class=card>{k}<b>{html.escape(v)}</b></div>" for k, v in cards)
            + "</div>")


def _baseline(report: dict) -> str:
    base = report.get("baseline")
    if not base:
        return ""
    items = base["regressions"]
    if not items:
        return f"<p class=ok>No regression against the baseline {html.escape(base['file'])}.</p>"
    rows = "".join(f"<li>{html.escape(r['message'])}</li>" for r in items)
    return (f"<div class=regress><b>{len(items)} regression(s) against the baseline "
            f"{html.escape(base['file'])}</b><ul>{rows}</ul></div>")


def _run_section(run: dict, out_dir: Path) -> str:
    title = f"{html.escape(run['title'])} · {html.escape(run['engine_requested'])}"
    parts = [f'<div class=run id="{html.escape(run["id"])}"><h3>{title}</h3>']
    if run["status"] != "ok" or not run.get("video"):
        error = run.get("error") or {}
        parts.append(f"<p>{_status_cell(run)} {html.escape(error.get('message', ''))}</p></div>")
        return "".join(parts)
    sync = run.get("sync") or {}
    parts.append(f"<div class=meta>chain {html.escape('+'.join(run.get('chain') or []))} · "
                 f"{_fmt(run.get('audio_s'), '{:.1f}')} s audio · {run['size'][0]}×{run['size'][1]} @ {run['fps']} fps"
                 f" · A/V offset {_fmt(sync.get('offset_ms'), '{:.0f}')} ms, confidence "
                 f"{_fmt(sync.get('confidence'))} · {html.escape(run.get('metrics_error', ''))}</div>")
    video = out_dir / run["video"]
    try:
        strip = _data_uri(plots.frame_strip(video, mouth_box=run.get("mouth_box")), "image/jpeg")
        parts.append(f'<img alt="frames of {html.escape(run["id"])}" src="{strip}">')
    except (OSError, ValueError, av.FFmpegError) as exc:  # a missing or broken MP4 shows as text, not a crash
        parts.append(f"<p class=bad>no frames: {html.escape(str(exc))}</p>")
    plot = _data_uri(plots.scenario_plot(run), "image/png")
    parts.append(f'<img alt="plot of {html.escape(run["id"])}" src="{plot}">')
    return "".join(parts) + "</div>"


def render_html(report: dict, out_dir: Path) -> str:
    """The page as one string (every picture inline)."""
    runs = report["runs"]
    overview = plots.latency_overview(runs) if any(r.get("timings_ms") for r in runs) else None
    body = [_header(report), _baseline(report), "<h2>Summary</h2><table>", SUMMARY_HEAD,
            *(_summary_row(r) for r in runs), "</table>"]
    if overview:
        body.append(f'<h2>Latency</h2><img alt="latency bars" src="{_data_uri(overview, "image/png")}">')
    body.append("<h2>Scenarios</h2>")
    body.extend(_run_section(run, out_dir) for run in runs)
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>Avatar renderer evaluation</title>"
            f"<style>{CSS}</style></head><body>" + "".join(body) + "</body></html>")


def write_html(report: dict, out_dir: Path) -> Path:
    path = Path(out_dir) / "report.html"
    path.write_text(render_html(report, Path(out_dir)), encoding="utf-8")
    return path
