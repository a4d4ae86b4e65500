"""`--baseline`: regressions are named, tolerances hold, and the command fails on them."""

from __future__ import annotations

import copy
import json

from avatar_engine.cli import main
from avatar_engine.evaluate.baseline import compare_reports


def _run(**fields) -> dict:
    run = {"id": "hello--auto", "status": "ok", "latency_s": 1.0, "first_segment_s": None, "fps": 25,
           "sync": {"offset_ms": 0.0, "confidence": 0.9}, "mouth_closed_fraction": 1.0,
           "output": {"plays": True, "duration_ok": True, "h264_aac": True, "faststart": True}}
    run.update(fields)
    return run


def _compare(base: dict, cur: dict) -> list:
    return compare_reports({"runs": [cur]}, {"runs": [base]})


def test_within_tolerance_is_no_regression():
    assert _compare(_run(), _run(latency_s=1.29, sync={"offset_ms": 40.0, "confidence": 0.82})) == []


def test_each_regression_is_named():
    cur = _run(latency_s=2.0, sync={"offset_ms": 80.0, "confidence": 0.6}, mouth_closed_fraction=0.5,
               output={"plays": True, "duration_ok": False, "h264_aac": True, "faststart": True})
    found = {r.metric: r.message for r in _compare(_run(), cur)}
    assert set(found) == {"latency_s", "sync.offset_ms", "sync.confidence", "mouth_closed_fraction",
                          "output.duration_ok"}
    assert "2.00x" in found["latency_s"] and "80 ms" in found["sync.offset_ms"]


def test_twice_as_fast_baseline_is_a_regression():
    found = _compare(_run(latency_s=1.0), _run(latency_s=2.0))
    assert [r.metric for r in found] == ["latency_s"] and "2.00x" in found[0].message


def test_a_run_that_now_fails_is_a_regression_and_new_runs_are_ignored():
    cur = _run(status="failed", error={"code": "no_face", "message": "no face"})
    assert [r.metric for r in _compare(_run(), cur)] == ["status"]
    assert compare_reports({"runs": [_run(id="new--auto")]}, {"runs": [_run()]}) == []


def test_a_baseline_claiming_twice_as_fast_fails_the_command(tiny_run, tiny_suite, tmp_path, capsys):
    _, evaluation, _ = tiny_run
    baseline = copy.deepcopy(evaluation.report)
    for run in baseline["runs"]:
        if run["status"] == "ok":
            # A baseline far faster than any run: the tiny suite renders in ~0.1 s, where the absolute slack
            # (0.05 s) and a busy machine would hide a plain halving of the first run's time (the exact
            # twice-as-fast rule is test_twice_as_fast_baseline_is_a_regression).
            run["latency_s"] = 0.001
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    code = main(["evaluate", "--out", str(tmp_path / "run"), "--suite", str(tiny_suite), "--baseline", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "REGRESSION" in err and ": latency_s " in err and "allowed +25% + 0.05 s" in err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert any(r["metric"] == "latency_s" for r in report["baseline"]["regressions"])
    assert "regression(s) against the baseline" in (tmp_path / "run" / "report.html").read_text()


def test_a_bad_baseline_stops_before_rendering(tmp_path, capsys):
    (tmp_path / "b.json").write_text("{}")
    assert main(["evaluate", "--out", str(tmp_path / "o"), "--baseline", str(tmp_path / "b.json")]) == 2
    assert "not an evaluate report" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
