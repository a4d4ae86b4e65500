"""The hostile-input corpus (tests/corpus/, made by scripts/make_corpus.py) through the job boundary.

Each case must answer with its stable code, fast, leave no temp file and only the output its path
delivery asked for; after the whole corpus the same warm process still renders.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
import tracemalloc
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from avatar_engine.errors import parse_error
from avatar_engine.media import fetch
from avatar_engine.serving.worker import run_job, warm_up
from scripts.make_corpus import CORPUS, PUBLIC_ALIAS, expand, load_manifest, make_cases
from tests.support.media import probe_mp4

MANIFEST = load_manifest()
CASES = {case["name"]: case for case in MANIFEST["cases"]}
FAST_S = 2.0


@pytest.fixture(scope="module", autouse=True)
def _warm_worker():
    """What handler.py does at import: the corpus measures a warm worker, not model loading."""
    warm_up()


@pytest.fixture
def public_alias(monkeypatch):
    """Resolve PUBLIC_ALIAS to the loopback test server as though it were a public address, so a
    production guard (allow_private_urls=False) can be exercised against redirects."""
    real = fetch._resolve

    def resolve(host, port, settings):
        return "127.0.0.1" if host == PUBLIC_ALIAS else real(host, port, settings)

    monkeypatch.setattr(fetch, "_resolve", resolve)


def _budget(case: dict, settings) -> float:
    if case.get("budget") == "fetch":
        return settings.fetch_total_timeout_s + settings.fetch_read_timeout_s + 0.5
    return FAST_S


def test_manifest_matches_generator_and_files():
    """The committed corpus is what the generator says: same cases, files intact, commit-friendly."""
    assert MANIFEST["cases"] == make_cases(), "run scripts/make_corpus.py"
    total = 0
    for name, meta in MANIFEST["files"].items():
        data = (CORPUS / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (meta["bytes"], meta["sha256"]), name
        total += len(data)
    assert total + (CORPUS / "cases.json").stat().st_size < 2 * 1024 * 1024
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted([*MANIFEST["files"], "cases.json"])


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=c["xfail"])) if "xfail" in c else n
    for n, c in CASES.items()
])
def test_case(name, settings, hostile, public_alias):
    case = CASES[name]
    settings = settings.model_copy(update=case.get("settings", {}))
    host = {False: "127.0.0.1", True: PUBLIC_ALIAS}
    payload = expand(case["input"], CORPUS, lambda route, public: f"http://{host[public]}:{hostile.port}{route}")

    start = time.monotonic()
    result = run_job({"id": name, "input": payload}, settings=settings)
    elapsed = time.monotonic() - start

    assert isinstance(result, dict)
    if case["expect"] == ["ok"]:
        assert "error" not in result, parse_error(result["error"])
        video = (Path(result["video_path"]).read_bytes() if "video_path" in result
                 else base64.b64decode(result["video_b64"]))
        assert probe_mp4(video)["frames"] == result["frames"] > 0
    else:
        assert set(result) == {"error"} and isinstance(result["error"], str), result
        error = parse_error(result["error"])
        assert error["code"] in case["expect"], error
        assert error["message"] and "Traceback" not in error["message"]
        assert case.get("message", "") in error["message"], error
    assert elapsed < _budget(case, settings), f"{name} took {elapsed:.2f} s"

    assert os.listdir(settings.work_dir) == [], "job temp dir left behind"
    output = payload.get("output") if isinstance(payload, dict) else None
    wrote = {output["name"]} if case["expect"] == ["ok"] and isinstance(output, dict) and "name" in output else set()
    assert set(os.listdir(settings.output_dir) if settings.output_dir.exists() else []) == wrote


def test_gzip_bomb_counts_decoded_bytes(settings):
    """A server may gzip the body although the worker asks for `identity`; the byte cap then holds
    on the decoded stream and memory stays near the cap (255 KB on the wire inflating to 256 MB)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    bomb = b"".join(deflate.compress(zeros) for _ in range(256)) + deflate.flush()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server naming
            self.send_response(200)
            for k, v in (("Content-Encoding", "gzip"), ("Content-Length", str(len(bomb))), ("Connection", "close")):
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(bomb)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    payload = expand({"image_url": f"http://127.0.0.1:{server.server_address[1]}/bomb.png",
                      "audio_b64": "{b64:speech-0.5s.wav}"})
    cap = 4 * 1024 * 1024
    tracemalloc.start()
    try:
        result = run_job({"id": "gzip-bomb", "input": payload}, settings=settings.model_copy(
            update={"max_image_bytes": cap}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        server.shutdown()
        server.server_close()
    assert parse_error(result["error"])["code"] == "input_too_large"
    assert peak < 4 * cap, f"peak {peak / 2**20:.0f} MB while refusing a {cap / 2**20:.0f} MB cap"


def test_worker_renders_after_the_corpus(settings):
    """Runs last in this module: the process that took every hostile case still renders normally."""
    payload = expand({"image_b64": "{b64:portrait.jpg}", "audio_b64": "{b64:speech-0.5s.wav}", "size": 256,
                      "output": {"delivery": "path", "name": "after.mp4"}})
    result = run_job({"id": "after-corpus", "input": payload}, settings=settings)
    assert "error" not in result, parse_error(result["error"])
    info = probe_mp4(result["video_path"])
    assert (info["width"], info["height"], info["frames"]) == (256, 256, result["frames"])
    assert os.listdir(settings.work_dir) == [] and os.listdir(settings.output_dir) == ["after.mp4"]
