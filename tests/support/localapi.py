"""Helpers for tests that run the worker as a process: its environment and a free loopback port."""

from __future__ import annotations

import os
import socket

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
