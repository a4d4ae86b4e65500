"""One evaluation from start to end: every scenario x engine on the target, measured, written as
`report.json` and `report.html`, compared with a baseline. A failing scenario is recorded with its error
code and the suite goes on; only a bad command line (suite file, target, baseline) stops it early."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import AvatarError
from .baseline import Regression, compare_reports
from .checks import output_checks
from .inputs import prepare_input
from .metrics import face_metrics
from .report import build_report, load_report, write_report
from .suite import Scenario, select_suite
from .targets import Outcome, Target, make_target


@dataclass
class EvaluateOptions:
    out_dir: Path
    target: str = "local"
    suite: str | None = None
    quick: bool = False
    engines: list[str] = field(default_factory=lambda: ["auto"])
    baseline: str | None = None
    timeout_s: float = 900.0
    html: bool = True
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)


@dataclass
class Evaluation:
    report: dict
    regressions: list[Regression]
    exit_code: int  # 0: every run as expected and no regression; 1 otherwise


def run_id(scenario: Scenario, engine: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{scenario.id}--{engine}")


def _series(metrics) -> dict:
    return {"fps": metrics.fps, "mouth_open": [round(float(v), 4) if v == v else None for v in metrics.mouth_open],
            "loudness": [round(float(v), 4) for v in metrics.loudness]}


def _measured(record: dict, outcome: Outcome, audio_s: float | None, portrait: bytes, out_dir: Path) -> None:
    """The figures of a rendered run (timings from the worker, everything else from the MP4)."""
    result = outcome.result
    timings = result.get("timings_ms") or {}
    audio_s = audio_s if audio_s is not None else result.get("duration_s")
    first_worker = timings.get("first_segment")
    record.update(
        engine=result.get("engine"), chain=result.get("chain"), fallback_reason=result.get("fallback_reason"),
        quality_mode=result.get("quality_mode"), encoder=result.get("encoder"), audio_s=audio_s,
        size=[result.get("width"), result.get("height")], fps=result.get("fps"), timings_ms=timings,
        worker_total_s=round(timings["total"] / 1000, 3) if "total" in timings else None,
        x_real_time=round(audio_s / outcome.wall_s, 3) if audio_s and outcome.wall_s > 0 else None,
        worker_first_segment_s=round(first_worker / 1000, 3) if first_worker is not None else None,
        video=str(outcome.video.relative_to(out_dir)) if outcome.video.is_relative_to(out_dir) else str(outcome.video),
        output=output_checks(outcome.video, audio_s))
    try:
        metrics = face_metrics(outcome.video, portrait)
    except Exception as exc:  # noqa: BLE001 - a measurement fault must not end the suite
        record["metrics_error"] = f"{type(exc).__name__}: {exc}"
        return
    record.update(metrics.figures, series=_series(metrics))


def run_scenario(target: Target, scenario: Scenario, engine: str, out_dir: Path) -> dict:
    """One scenario with one engine on the target -> its run record (never raises for a failed job)."""
    record = {"id": run_id(scenario, engine), "scenario": scenario.id, "title": scenario.title,
              "language": scenario.language or None, "tags": scenario.tags, "stream": scenario.stream,
              "engine_requested": engine, "status": "ok", "error": None}
    try:
        prepared = prepare_input(scenario, engine)
        outcome = target.run(prepared.payload, out_dir / "videos" / f"{record['id']}.mp4", stream=scenario.stream)
    except AvatarError as exc:
        outcome = Outcome(None, {"code": exc.code, "message": exc.message}, None, 0.0)
    except Exception as exc:  # noqa: BLE001 - the evaluator's own fault on one scenario ends only that scenario
        outcome = Outcome(None, {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}, None, 0.0)
    record["latency_s"] = round(outcome.wall_s, 3)
    record["first_segment_s"] = round(outcome.first_chunk_s, 3) if outcome.first_chunk_s is not None else None
    if outcome.error is not None:
        record["error"] = outcome.error
        expected = scenario.expect_error and outcome.error.get("code") == scenario.expect_error
        record["status"] = "expected_error" if expected else "failed"
        return record
    try:
        _measured(record, outcome, prepared.audio_s, Path(scenario.portrait).read_bytes(), out_dir)
    except Exception as exc:  # noqa: BLE001 - a measurement fault must not end the suite
        record["metrics_error"] = f"{type(exc).__name__}: {exc}"
    if scenario.expect_error:
        record.update(status="failed", error={"code": "unexpected_success",
                                              "message": f"expected {scenario.expect_error}, the job rendered"})
    return record


def _line(index: int, total: int, record: dict) -> str:
    head = f"[{index}/{total}] {record['scenario']} ({record['engine_requested']}): "
    if record["status"] != "ok":
        return head + f"{record['status']} [{record['error']['code']}] {record['error']['message'][:120]}"
    sync = record.get("sync") or {}
    return head + (f"ok {record['latency_s']:.2f} s, {record.get('x_real_time') or 0:.1f}x real time, "
                   f"sync {sync.get('offset_ms', '-')} ms / {sync.get('confidence', '-')}, "
                   f"chain {'+'.join(record.get('chain') or [])}")


def _suite_info(options: EvaluateOptions, scenarios: list[Scenario]) -> dict:
    return {"file": str(options.suite) if options.suite else None, "quick": options.quick,
            "scenarios": [s.to_dict() for s in scenarios]}


def evaluate(options: EvaluateOptions) -> Evaluation:
    """Run the suite, write DIR/report.json and DIR/report.html, compare with the baseline."""
    scenarios = select_suite(options.suite, quick=options.quick)
    baseline = load_report(options.baseline) if options.baseline else None  # a bad baseline fails before the run
    out_dir = Path(options.out_dir).resolve()  # videos are recorded relative to it
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    started = time.time()
    target = make_target(options.target, timeout_s=options.timeout_s)
    target_info = target.describe()
    runs, total = [], len(scenarios) * len(options.engines)
    for scenario in scenarios:
        for engine in options.engines:
            runs.append(run_scenario(target, scenario, engine, out_dir))
            options.log(_line(len(runs), total, runs[-1]))
    report = build_report(target=target_info, suite=_suite_info(options, scenarios), engines=options.engines,
                          runs=runs, started=started, finished=time.time())
    regressions = compare_reports(report, baseline) if baseline is not None else []
    if baseline is not None:
        report["baseline"] = {"file": str(options.baseline), "started_at": baseline.get("started_at"),
                              "regressions": [r.to_dict() for r in regressions]}
    write_report(report, out_dir)
    if options.html:
        from .html import write_html  # matplotlib is imported only here

        write_html(report, out_dir)
    failed = [r for r in runs if r["status"] == "failed"]
    return Evaluation(report, regressions, 1 if failed or regressions else 0)
