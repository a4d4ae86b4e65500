"""The tiny in-process evaluation: report.json's schema, the failure that does not abort, report.html."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from avatar_engine.evaluate.report import SCHEMA, SCHEMA_VERSION, load_report
from tests.support.media import REPO


def test_report_json_is_versioned_and_names_the_machine_and_chain(tiny_run):
    out, evaluation, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(evaluation.report))
    assert report["schema"] == SCHEMA and report["schema_version"] == SCHEMA_VERSION
    assert report["machine"]["cpu"] and report["machine"]["cores"] >= 1 and "gpus" in report["machine"]
    assert report["versions"]["avatar-renderer"] and report["versions"]["av"]
    assert report["target"]["kind"] == "local" and "device" in report["target"]["health"]
    assert [run["scenario"] for run in report["runs"]] == ["hello", "no-face", "quiet"]
    assert load_report(out / "report.json")["summary"] == report["summary"]


def test_rendered_runs_carry_every_metric(tiny_run):
    out, evaluation, _ = tiny_run
    hello = evaluation.report["runs"][0]
    assert hello["status"] == "ok" and hello["chain"] == ["parametric"] and hello["language"] == "en"
    assert {"fetch", "decode", "render", "encode", "total"} <= set(hello["timings_ms"])
    assert hello["latency_s"] > 0 and hello["x_real_time"] > 0 and hello["audio_s"] > 0.5
    assert -40 <= hello["sync"]["offset_ms"] <= 40 and hello["sync"]["confidence"] > 0.5
    assert hello["blinks_per_min"] is not None and hello["head"]["sway_rms_pct"] is not None
    x0, y0, x1, y1 = hello["mouth_box"]
    assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 160
    assert hello["output"] | {"plays": True, "duration_ok": True, "h264_aac": True, "faststart": True} \
        == hello["output"]
    assert len(hello["series"]["mouth_open"]) == hello["output"]["frames"]
    assert (out / hello["video"]).is_file()


def test_silence_keeps_the_mouth_closed_and_streaming_is_timed(tiny_run):
    _, evaluation, _ = tiny_run
    quiet = evaluation.report["runs"][2]
    assert quiet["status"] == "ok" and quiet["silent_frames"] == quiet["output"]["frames"]
    assert quiet["mouth_closed_fraction"] == 1.0
    assert quiet["stream"] and 0 < quiet["first_segment_s"] <= quiet["latency_s"]
    assert quiet["worker_first_segment_s"] is not None


def test_a_failed_scenario_is_recorded_with_its_code_and_the_suite_goes_on(tiny_run):
    _, evaluation, lines = tiny_run
    failed = evaluation.report["runs"][1]
    assert failed["status"] == "failed" and failed["error"]["code"] == "no_face"
    assert evaluation.report["summary"]["failed"] == 1 and evaluation.report["summary"]["error_codes"] == ["no_face"]
    assert evaluation.exit_code == 1  # an unexpected failure fails the command, after the whole suite ran
    assert len(lines) == 3 and "[no_face]" in lines[1]


def test_report_html_is_self_contained_with_frames_and_plots(tiny_run):
    out, _, _ = tiny_run
    page = (out / "report.html").read_text()
    assert "<table>" in page and "no_face" in page
    assert len(re.findall(r'src="data:image/jpeg;base64,', page)) == 2  # one frame strip per rendered run
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3  # two scenario plots + latency bars
    external = re.findall(r'(?:src|href)="(?!data:|#)([^"]*)"', page)
    assert external == [] and "http://" not in page and "https://" not in page and "<script" not in page


def test_the_worker_never_imports_the_evaluator_or_matplotlib():
    code = ("import sys, avatar_engine.serving.worker, avatar_engine.pipeline, avatar_engine.cli; "
            "bad = [m for m in sys.modules if m.startswith(('matplotlib', 'avatar_engine.evaluate'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_silent_frames_count_as_closed_at_the_portraits_own_rest():
    import numpy as np

    from avatar_engine.evaluate.metrics import silence_figures

    level = np.full(6, -80.0)  # all silent
    smile = silence_figures(np.full(6, 0.05), level, portrait_rest=0.05)  # the portrait's own smile kept
    shut = silence_figures(np.zeros(6), level, portrait_rest=0.05)  # an engine that closes it
    held_open = silence_figures(np.full(6, 0.10), level, portrait_rest=0.0)  # closed lips held open
    assert smile["mouth_closed_fraction"] == shut["mouth_closed_fraction"] == 1.0
    assert held_open["mouth_closed_fraction"] == 0.0
