"""builder/fetch_models.py against a loopback HTTP server serving files this test makes.

Covers what breaks image builds in practice: a body cut short (wrong Content-Length, closed early), a
wrong checksum, a resumed .part (HTTP Range), a server that ignores Range, and the CLI's exit status.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder import fetch_models as fm

GOOD = os.urandom(300_000) + b"end"
OTHER = os.urandom(len(GOOD))
FAST = fm.FetchOptions(retries=4, timeout_s=5, backoff_s=0.01)


class _Server:
    """Routes: /good (Range-capable), /short (Content-Length larger than the body), /flaky (closes early on
    the first request, then serves ranges), /norange (ignores Range), /other (different bytes), /missing."""

    def __init__(self):
        self.requests: list[tuple[str, str | None]] = []
        self.flaky_hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                if self.path == "/missing":
                    self.send_error(404)
                    return
                body = OTHER if self.path == "/other" else GOOD
                if self.path == "/short":
                    self._send(200, body[: len(body) // 2], length=len(body))
                    return
                if self.path == "/flaky":
                    outer.flaky_hits += 1
                    if outer.flaky_hits == 1:
                        self._send(200, body[:100_000], length=len(body))
                        return
                start = int(rng.split("=")[1].split("-")[0]) if rng and self.path != "/norange" else 0
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if start:
                    self._send(206, body[start:], extra={"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
                else:
                    self._send(200, body)

            def _send(self, status, payload, length=None, extra=None):
                self.send_response(status)
                self.send_header("Content-Length", str(length if length is not None else len(payload)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with _Server() as srv:
        yield srv


def _entry(url, *, size=len(GOOD), sha=hashlib.sha256(GOOD).hexdigest(), key="demo"):
    return fm.Entry(key=key, path=f"demo/{key}.bin", url=url, size=size, sha256=sha)


def _record(path: Path) -> dict:
    return json.loads(path.with_name(path.name + fm.SIDE_SUFFIX).read_text())


def test_good_file_lands_atomically_with_a_record(server, tmp_path):
    dest = fm.fetch(_entry(server.url + "/good"), tmp_path, opts=FAST, log=lambda *_: None)
    assert dest.read_bytes() == GOOD
    assert not dest.with_name(dest.name + ".part").exists()
    rec = _record(dest)
    assert rec["sha256"] == hashlib.sha256(GOOD).hexdigest() and rec["size"] == len(GOOD)
    # A second run checks the existing file and downloads nothing.
    before = len(server.requests)
    fm.fetch(_entry(server.url + "/good"), tmp_path, opts=FAST, log=lambda *_: None)
    assert len(server.requests) == before


def test_truncated_body_is_refused_and_never_renamed(server, tmp_path):
    with pytest.raises(fm.FetchError, match="gave up"):
        fm.fetch(_entry(server.url + "/short", size=None, sha=None), tmp_path, opts=FAST, log=lambda *_: None)
    assert not (tmp_path / "demo/demo.bin").exists()
    # Without a size in the manifest the server's Content-Length is what catches it; every retry resumed.
    assert all(rng is not None for _, rng in server.requests[1:])


def test_closed_early_then_resumed_with_range(server, tmp_path):
    dest = fm.fetch(_entry(server.url + "/flaky"), tmp_path, opts=FAST, log=lambda *_: None)
    assert dest.read_bytes() == GOOD
    assert server.requests[0] == ("/flaky", None)
    assert server.requests[1] == ("/flaky", "bytes=100000-")


def test_resume_after_a_partial_part_file(server, tmp_path):
    part = tmp_path / "demo/demo.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(GOOD[:123_456])
    dest = fm.fetch(_entry(server.url + "/good"), tmp_path, opts=FAST, log=lambda *_: None)
    assert dest.read_bytes() == GOOD
    assert server.requests == [("/good", "bytes=123456-")]


def test_part_already_complete_gets_416_and_is_accepted(server, tmp_path):
    part = tmp_path / "demo/demo.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(GOOD)
    assert fm.fetch(_entry(server.url + "/good"), tmp_path, opts=FAST, log=lambda *_: None).read_bytes() == GOOD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    part = tmp_path / "demo/demo.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes")
    assert fm.fetch(_entry(server.url + "/norange"), tmp_path, opts=FAST, log=lambda *_: None).read_bytes() == GOOD


def test_wrong_checksum_fails_after_one_clean_retry(server, tmp_path):
    with pytest.raises(fm.FetchError, match="sha256 mismatch"):
        fm.fetch(_entry(server.url + "/other"), tmp_path, opts=FAST, log=lambda *_: None)
    assert not (tmp_path / "demo/demo.bin").exists()
    assert not (tmp_path / "demo/demo.bin.part").exists()
    assert [p for p, _ in server.requests] == ["/other", "/other"]  # the resumed-part suspicion, then the verdict


def test_stale_part_from_another_upload_is_redownloaded(server, tmp_path):
    part = tmp_path / "demo/demo.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(OTHER[:1000])  # resumed, the result hashes wrong; one fresh download fixes it
    assert fm.fetch(_entry(server.url + "/good"), tmp_path, opts=FAST, log=lambda *_: None).read_bytes() == GOOD
    assert server.requests == [("/good", "bytes=1000-"), ("/good", None)]


def test_wrong_size_in_place_is_replaced(server, tmp_path):
    dest = tmp_path / "demo/demo.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(GOOD[:10])
    assert fm.fetch(_entry(server.url + "/good"), tmp_path, opts=FAST, log=lambda *_: None).read_bytes() == GOOD


def test_http_404_fails_without_retrying(server, tmp_path):
    with pytest.raises(fm.FetchError, match="HTTP 404"):
        fm.fetch(_entry(server.url + "/missing"), tmp_path, opts=FAST, log=lambda *_: None)
    assert len(server.requests) == 1


def test_entry_without_url_names_the_override(tmp_path):
    entry = fm.Entry("fomm_vox", "fomm/vox-cpk.pth.tar", None, None, None, page="https://drive.example/x")
    with pytest.raises(fm.FetchError, match=r"fomm_vox=<url>.*|upstream: https://drive.example/x"):
        fm.fetch(entry, tmp_path, opts=FAST, log=lambda *_: None)


def _manifest(tmp_path, url, sha) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({
        "files": {"demo": {"path": "demo/demo.bin", "url": url, "size": len(GOOD), "sha256": sha, "images": ["x"]}},
        "images": {"x": {"engines": []}},
    }))
    return path


def test_cli_exit_status_and_url_override(server, tmp_path, monkeypatch, capsys):
    sha = hashlib.sha256(GOOD).hexdigest()
    bad = _manifest(tmp_path, server.url + "/other", sha)
    assert fm.main(["--manifest", str(bad), "--image", "x", "--root", str(tmp_path / "m"), "--retries", "2"]) == 1
    assert "sha256 mismatch" in capsys.readouterr().err
    monkeypatch.setenv("MODEL_URLS", f"demo={server.url}/good")
    assert fm.main(["--manifest", str(bad), "--image", "x", "--root", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m/demo/demo.bin").read_bytes() == GOOD
    assert fm.main(["--manifest", str(bad), "--image", "nope", "--root", str(tmp_path)]) == 2


def test_real_manifest_selects_each_images_files():
    manifest = fm.load_manifest()
    sad = {e.key for e in fm.entries_for(manifest, "sadtalker")}
    hq = {e.key for e in fm.entries_for(manifest, "hq")}
    assert {"sadtalker_256", "sadtalker_mapping_crop", "wav2lip_gan", "gfpgan_v14"} <= sad
    assert {"fomm_vox", "diff2lip", "gfpgan_v14"} <= hq and "fomm_vox" not in sad
