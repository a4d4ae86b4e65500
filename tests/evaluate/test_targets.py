"""The same scenarios against a deployed endpoint (the client, a fake hosted API) and the SDK's local
API server; and the shipped `--quick` run (slow)."""

from __future__ import annotations

import base64
import json

import pytest

from avatar_engine.cli import main
from avatar_engine.errors import AvatarError
from avatar_engine.evaluate.runner import run_scenario
from avatar_engine.evaluate.suite import Scenario
from avatar_engine.evaluate.targets import make_target
from tests.clients.fake_hosted import FakeHosted
from tests.support.localapi import local_api_server

SILENCE = Scenario("quiet", "Silence", language="", audio={"silence_s": 1.0}, request={"size": 160})


@pytest.fixture
def hosted(monkeypatch, tiny_run):
    """A fake hosted endpoint whose jobs 'render' the tiny run's MP4 (inline base64)."""
    out, evaluation, _ = tiny_run
    quiet = evaluation.report["runs"][2]
    fake = FakeHosted()
    fake.output = {"video_b64": base64.b64encode((out / quiet["video"]).read_bytes()).decode(), "engine": "parametric",
                   "chain": ["parametric"], "duration_s": 1.0, "fps": 25, "width": 160, "height": 160,
                   "timings_ms": {"render": 5.0, "encode": 50.0, "total": 80.0}}
    fake.states = ["IN_PROGRESS", "COMPLETED"]
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", fake.base)
    monkeypatch.setenv("RUNPOD_API_KEY", fake.api_key)
    yield fake
    fake.close()


def test_endpoint_target_measures_the_downloaded_video(hosted, tmp_path):
    target = make_target("endpoint:ep123", timeout_s=30)
    assert target.describe()["health"]["workers"] == {"idle": 1}
    record = run_scenario(target, SILENCE, "auto", tmp_path)
    assert record["status"] == "ok", record
    assert record["chain"] == ["parametric"] and record["worker_total_s"] == 0.08
    assert record["output"]["h264_aac"] and record["mouth_closed_fraction"] == 1.0
    assert (tmp_path / record["video"]).is_file()
    sent = next(iter(hosted.jobs.values()))["input"]
    assert "audio_b64" in sent and "image_b64" in sent and sent["size"] == 160


def test_endpoint_failure_keeps_the_workers_code(hosted, tmp_path):
    hosted.error = json.dumps({"code": "no_face", "message": "no face was found"})
    record = run_scenario(make_target("endpoint:ep123", timeout_s=30), SILENCE, "auto", tmp_path)
    assert record["status"] == "failed" and record["error"]["code"] == "no_face"


def test_unknown_target_or_missing_key_is_refused(monkeypatch):
    with pytest.raises(AvatarError, match="local, api:URL or endpoint:ID"):
        make_target("gpu:fast")
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(AvatarError, match="RUNPOD_API_KEY") as err:
        make_target("endpoint:ep123")
    assert err.value.code == "invalid_input"


@pytest.mark.slow
def test_local_api_server_target(tmp_path):
    """The SDK's server with the streaming handler: /run answers the aggregated events, /stream the chunks."""
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"include_default": False, "scenarios": [
        {"id": "hello", "text": "Hello there.", "language": "en", "request": {"size": 160}},
        {"id": "live", "audio": {"silence_s": 1.0}, "language": "", "stream": True, "request": {"size": 160}}]}))
    with local_api_server(tmp_path, STREAM_OUTPUT="true") as api:
        code = main(["evaluate", "--out", str(tmp_path / "out"), "--suite", str(suite), "--target", f"api:{api.base}"])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert code == 0, report["runs"]
    assert report["target"]["kind"] == "api" and report["target"]["api_shape"] == "local"
    assert all(run["output"]["plays"] and run["chain"] == ["parametric"] for run in report["runs"])
    live = report["runs"][1]
    assert 0 < live["first_segment_s"] <= live["latency_s"] and live["worker_first_segment_s"] is not None


@pytest.mark.slow
def test_quick_run_writes_both_files(tmp_path):
    assert main(["evaluate", "--out", str(tmp_path), "--quick"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["summary"]["ok"] == report["summary"]["runs"] >= 5
    assert len(report["summary"]["languages"]) >= 3
    assert any(run["first_segment_s"] for run in report["runs"])
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/jpeg;base64,") == report["summary"]["runs"]
