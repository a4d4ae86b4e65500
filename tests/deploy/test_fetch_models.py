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
                if self.path == "/html":  # what a Drive quota or sign-in page looks like to wget
                    self._send(200, b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>")
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


def _sources(*urls, size=len(GOOD), sha=None, key="demo", fallback=()):
    srcs = tuple(fm.Source("http", u, "mirror") for u in urls)
    return fm.Entry(key, f"demo/{key}.bin", urls[0], size, sha, None, srcs, tuple(fallback))


def test_html_page_is_refused_and_the_next_source_serves(server, tmp_path):
    entry = _sources(server.url + "/html", server.url + "/good", size=None)
    dest = fm.fetch(entry, tmp_path, opts=FAST, log=lambda *_: None)
    assert dest.read_bytes() == GOOD
    assert [p for p, _ in server.requests][:1] == ["/html"]


def test_every_url_tried_and_what_to_do_next(server, tmp_path):
    entry = _sources(server.url + "/missing", server.url + "/html", size=None)
    with pytest.raises(fm.FetchError) as info:
        fm.fetch(entry, tmp_path, opts=FAST, log=lambda *_: None)
    text = str(info.value)
    assert "demo/demo.bin" in text and "tried 2 source(s)" in text
    assert f"{server.url}/missing (mirror): HTTP 404" in text and "HTML page" in text
    assert "MODEL_URLS='demo=<url>'" in text and "network volume" in text and str(tmp_path / "demo/demo.bin") in text


class _FakeGdown:
    """gdown's two calls the builder uses, over a dict of Drive ids -> bytes and one folder listing."""

    File = __import__("collections").namedtuple("File", "id path local_path")

    def __init__(self, files: dict, folder: list):
        self.files, self.folder, self.calls = files, folder, []

    def download_folder(self, url, skip_download, quiet):
        self.calls.append(("folder", url))
        return [self.File(i, p, p) for i, p in self.folder]

    def download(self, id, output, quiet, resume):
        self.calls.append(("file", id))
        Path(output).write_bytes(self.files[id])
        return output


def test_drive_folder_source_picks_the_file_by_name(tmp_path):
    fake = _FakeGdown({"ID_SD_GAN_123": GOOD}, [("ID_SAMPLE_456", "samples/a.mp4"), ("ID_SD_GAN_123", "Wav2Lip-SD-GAN.pt")])
    src = fm.Source("gdrive_folder", "https://drive.google.com/drive/folders/FOLDER", "upstream", "Wav2Lip-SD-GAN.pt")
    entry = fm.Entry("w", "wav2lip/Wav2Lip-SD-GAN.pt", None, len(GOOD), None, None, (src,))
    assert fm.fetch(entry, tmp_path, log=lambda *_: None, gdown=fake).read_bytes() == GOOD
    assert fake.calls[-1] == ("file", "ID_SD_GAN_123")
    missing = fm.Entry("w2", "wav2lip/other.pt", None, None, None, None,
                       (fm.Source("gdrive_folder", src.url, "upstream", "other.pt"),))
    with pytest.raises(fm.FetchError, match="no other.pt in the Drive folder; it lists Wav2Lip-SD-GAN.pt, a.mp4"):
        fm.fetch(missing, tmp_path, log=lambda *_: None, gdown=fake)


def test_drive_file_link_and_quota_page(tmp_path):
    fake = _FakeGdown({"1AbCdEfGhIjK": b"<!doctype html><title>Quota exceeded</title>"}, [])
    entry = fm.Entry("d", "d/x.pt", None, None, None)
    with pytest.raises(fm.FetchError, match="HTML page"):
        fm.fetch(entry, tmp_path, url="https://drive.google.com/file/d/1AbCdEfGhIjK/view", log=lambda *_: None,
                 gdown=fake)
    assert not (tmp_path / "d/x.pt").exists() and not (tmp_path / "d/x.pt.part").exists()


def test_fallback_file_serves_when_the_first_cannot_be_fetched(server, tmp_path):
    manifest = {"files": {
        "first": {"path": "w/first.pth", "url": server.url + "/missing", "size": None, "sha256": None,
                  "fallback_files": ["second"]},
        "second": {"path": "w/second.pt", "sources": [{"kind": "http", "url": server.url + "/good",
                                                        "role": "upstream"}], "size": None, "sha256": None}}}
    entry = fm.entry_from(manifest, "first")
    assert fm.fetch_with_fallbacks(manifest, entry, tmp_path, {}, FAST, log=lambda *_: None) is None
    assert (tmp_path / "w/second.pt").read_bytes() == GOOD
    manifest["files"]["second"]["sources"][0]["url"] = server.url + "/missing"
    error = fm.fetch_with_fallbacks(manifest, fm.entry_from(manifest, "first"), tmp_path / "again", {}, FAST,
                                    log=lambda *_: None)
    assert "first: could not fetch" in error and "second: could not fetch" in error
