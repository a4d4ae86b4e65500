"""`python -m avatar_engine batch`: 10 rows against the real local server, one bad row, a Ctrl-C
mid-run (SIGINT to the real CLI), then a resume that submits only what was left."""

from __future__ import annotations

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import time

from avatar_engine.clients.batch import BatchOptions, load_manifest, run_batch
from avatar_engine.clients.endpoint import AvatarClient, ClientConfig
from tests.support.media import REPO, probe_mp4

BAD_ROW = "r04"


class CountingClient(AvatarClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.submitted: list[dict] = []

    def run(self, payload, **kwargs):
        self.submitted.append(payload)
        return super().run(payload, **kwargs)


def _manifest(tmp_path, quick_input):
    rows = []
    for i in range(10):
        row = {**quick_input, "row_id": f"r{i:02d}", "seed": i}
        if row["row_id"] == BAD_ROW:
            row["image_b64"] = base64.b64encode(b"not an image").decode()  # the injected failure
        rows.append(json.dumps(row))
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def _state(out):
    return json.loads((out / "state.json").read_text())["rows"]


def test_batch_interrupt_then_resume(local_api, quick_input, tmp_path):
    manifest = _manifest(tmp_path, quick_input)
    out = tmp_path / "out"
    env = {**os.environ, "AVATAR_SERVICE_BASEURL": local_api, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "avatar_engine", "batch", str(manifest), "--out-dir", str(out),
                             "--concurrency", "1", "--quiet"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a suite started in the background (`cmd &`) inherits an ignored SIGINT: Ctrl-C as a user
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ctrl-C once a few rows are done
        try:
            if sum(r["status"] in ("COMPLETED", "FAILED") for r in _state(out).values()) >= 2:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.002)  # one row at a time and a quick poll: a busy machine must not let all ten finish first
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    first = _state(out)  # parses: the state was written atomically
    done_first = {r for r, s in first.items() if s["status"] in ("COMPLETED", "FAILED")}
    assert 2 <= len(done_first) < 10, "the interrupt came too late to leave work for the resume"
    assert json.loads(stdout)["interrupted"] is True
    assert {json.loads(line)["row"] for line in (out / "results.jsonl").read_text().splitlines()} == done_first

    client = CountingClient(ClientConfig(base_url=local_api))
    summary = run_batch(manifest, client=client, out_dir=out, options=BatchOptions(concurrency=3, progress=False))
    submitted_rows = {p["seed"] for p in client.submitted}
    assert not submitted_rows & {int(r[1:]) for r in done_first}, "a finished row was submitted again"
    assert summary.submitted + summary.resumed >= 10 - len(done_first) and summary.submitted <= 10 - len(done_first)
    assert (summary.completed, summary.failed, summary.pending) == (9, 1, 0) and summary.errors == {
        "unsupported_media": 1}

    final = _state(out)
    for row in done_first:  # untouched by the resume
        assert final[row]["job_id"] == first[row]["job_id"]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["row"] for r in results] == [f"r{i:02d}" for i in range(10)]
    bad = next(r for r in results if r["row"] == BAD_ROW)
    assert (bad["status"], bad["error_code"], bad["attempts"]) == ("FAILED", "unsupported_media", 1)
    for r in results:
        if r["status"] == "COMPLETED":
            assert r["job_id"] and r["wall_s"] >= 0 and r["timings_ms"]["total"] > 0
            assert probe_mp4(r["video"])["frames"] == 53

    again = CountingClient(ClientConfig(base_url=local_api))
    summary = run_batch(manifest, client=again, out_dir=out, options=BatchOptions(progress=False))
    assert again.submitted == [] and summary.completed == 9


def test_csv_manifest(tmp_path):
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row_id", "image_url", "audio_url", "size", "still", "output.delivery", "transcript"])
        w.writerow(["a", "https://x/p.png", "https://x/a.wav", "256", "true", "url", "123"])
        w.writerow(["b", "https://x/q.png", "https://x/b.wav", "", "", "", ""])
    assert load_manifest(path) == [
        ("a", {"image_url": "https://x/p.png", "audio_url": "https://x/a.wav", "size": 256, "still": True,
               "output": {"delivery": "url"}, "transcript": "123"}),
        ("b", {"image_url": "https://x/q.png", "audio_url": "https://x/b.wav"}),
    ]
