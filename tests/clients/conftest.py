"""Fixtures for the client tests: the SDK's real local API server running our handler.py on 127.0.0.1,
a folder of named avatars it serves, and request inputs that render in well under a second
(embedded engine, 2.1 s of audio, 256 px)."""

from __future__ import annotations

import base64

import pytest

from tests.support.localapi import local_api_server
from tests.support.media import ASSETS


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
    # loopback URLs allowed so the provider test can serve its inputs from 127.0.0.1 (metadata stays closed)
    with local_api_server(tmp, AVATARS_DIR=str(avatars_dir), ALLOW_PRIVATE_URLS="true") as api:
        yield api.base


@pytest.fixture(scope="session")
def quick_input(portrait_png, short_wav) -> dict:
    return {"image_b64": base64.b64encode(portrait_png).decode(), "audio_b64": base64.b64encode(short_wav).decode(),
            "size": 256, "engine": "parametric"}
