"""Shared fixtures: repo assets, a permissive-for-loopback settings object, a hostile server."""

from __future__ import annotations

import base64
import os
import tempfile

import pytest

from avatar_engine.settings import Settings
from tests.support.http import HostileServer
from tests.support.media import asset_bytes

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def portrait_png() -> bytes:
    return asset_bytes("astronaut_512.png")


@pytest.fixture(scope="session")
def speech_wav() -> bytes:
    return asset_bytes("speech_16k.wav")


@pytest.fixture(scope="session")
def short_wav() -> bytes:
    return asset_bytes("short_16k.wav")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Test settings: loopback URLs allowed (the metadata range stays closed), short timeouts,
    outputs and job temp dirs under tmp_path so leaks are visible."""
    work = tmp_path / "work"
    work.mkdir()
    return Settings(allow_private_urls=True, fetch_connect_timeout_s=1.0, fetch_read_timeout_s=1.0,
                    fetch_total_timeout_s=1.5, output_dir=tmp_path / "out", work_dir=work,
                    model_root=tmp_path / "no-models", media_bucket=None)


@pytest.fixture(scope="session")
def hostile(portrait_png, speech_wav):
    server = HostileServer({"/image.png": portrait_png, "/speech.wav": speech_wav,
                            "/image.jpg.wav": speech_wav})
    yield server
    server.close()


@pytest.fixture(autouse=True, scope="session")
def _no_stray_temp_dirs():
    """Jobs must leave no `avatar-job-*` directories behind in the system temp dir."""
    tmp = tempfile.gettempdir()
    before = {n for n in os.listdir(tmp) if n.startswith("avatar-job-")}
    yield
    after = {n for n in os.listdir(tmp) if n.startswith("avatar-job-")}
    assert after <= before, f"temp dirs leaked: {sorted(after - before)}"
