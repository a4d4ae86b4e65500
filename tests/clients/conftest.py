"""Fixtures for the client tests: the SDK's real local API server running our handler.py on 127.0.0.1,
a folder of named avatars it serves, and request inputs that render in well under a second
(embedded engine, 2.1 s of audio, 256 px)."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.localapi import free_port as _free_port
from tests.support.localapi import worker_env as _env
from tests.support.media import ASSETS, REPO


@pytest.fixture(scope="session")
def avatars_dir(tmp_path_factory):
    """alice.png (the portrait), a text file, and a symlink that points out of the folder."""
    root = tmp_path_factory.mktemp("avatars")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes((ASSETS / "astronaut_512.png").read_bytes())
    (root / "alice.png").write_bytes((ASSETS / "astronaut_512.png").read_bytes())
    (root / "notes.txt").write_text("not an avatar")
    (root / "evil.png").symlink_to(outside / "secret.png")
    return root


@pytest.fixture(scope="session")
def local_api(tmp_path_factory, avatars_dir):
    """Base URL of `python handler.py --rp_serve_api` on a free loopback port."""
    tmp = tmp_path_factory.mktemp("clients-api")
    port = _free_port()
    # loopback URLs allowed so the provider test can serve its inputs from 127.0.0.1 (metadata stays closed)
    env = _env(tmp, AVATARS_DIR=str(avatars_dir), ALLOW_PRIVATE_URLS="true")
    proc = subprocess.Popen([sys.executable, str(REPO / "handler.py"), "--rp_serve_api", "--rp_api_host", "127.0.0.1",
                             "--rp_api_port", str(port)], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"API server exited: {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(base + "/docs", timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("API server did not start")
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def quick_input(portrait_png, short_wav) -> dict:
    return {"image_b64": base64.b64encode(portrait_png).decode(), "audio_b64": base64.b64encode(short_wav).decode(),
            "size": 256, "engine": "parametric"}
