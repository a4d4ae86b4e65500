"""Helpers for tests that run the worker as a process: its environment, a free port, the local API server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.media import REPO


def worker_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "MEDIA_", "BUCKET_", "GCS_"))}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(OUTPUT_DIR=str(tmp_path / "out"), TMPDIR=str(tmp_path / "tmp"), LOG_LEVEL="WARNING",
               MODEL_ROOT=str(tmp_path / "models"), PYTHONPATH=str(REPO), **extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalApi:
    """A running `python handler.py --rp_serve_api` (the Runpod SDK's local simulator)."""

    base: str
    proc: subprocess.Popen
    log: Path


@contextmanager
def local_api_server(tmp: Path, *, start_timeout_s: float = 180, **env) -> Iterator[LocalApi]:
    """Start the worker's local API on a free loopback port under `tmp`; stop it on exit.

    The server's log goes to a file: an unread stderr pipe fills up and would block the server mid-job.
    Start-up waits for `/docs` (warm-up runs before the port opens; slow on a loaded 2-core machine).
    """
    port = free_port()
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(REPO / "handler.py"), "--rp_serve_api", "--rp_api_host",
                                 "127.0.0.1", "--rp_api_port", str(port)], cwd=tmp, env=worker_env(tmp, **env),
                                stdout=subprocess.DEVNULL, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"API server exited: {log_path.read_text(errors='replace')[-2000:]}")
                try:
                    urllib.request.urlopen(base + "/docs", timeout=10).close()  # noqa: S310 - loopback
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail("API server did not start")
                    time.sleep(0.3)
            yield LocalApi(base, proc, log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
