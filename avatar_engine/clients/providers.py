"""The orchestrator switch: one `render(image_url, audio_url, **options) -> video URL` per provider.

`get_provider()` reads `AVATAR_PROVIDER`: `sadtalker` (default) is this worker's endpoint through
`avatar_engine.clients.endpoint` (the name is the design's; the endpoint picks its engine, `engine=` overrides);
`d-id` is the D-ID `/talks` API kept behind the switch so reverting is one variable. D-ID needs
`DID_API_KEY` (the `user:secret` key from its studio, sent as HTTP Basic) and fails with a message
saying so when it is missing.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

import requests

from ..errors import AvatarError
from .endpoint import AvatarClient, JobFailed

DID_API_BASE = "https://api.d-id.com"


class Provider(Protocol):
    name: str

    def render(self, image_url: str, audio_url: str, **options) -> str:
        """Render and return where the MP4 is (an https URL for bucket delivery)."""
        ...


class EndpointProvider:
    """This repository's worker: the request's other fields pass through as `options`."""

    name = "sadtalker"

    def __init__(self, client: AvatarClient | None = None, timeout_s: float = 900.0):
        self.client = client or AvatarClient.from_env()
        self.timeout_s = timeout_s

    def render(self, image_url: str, audio_url: str, **options) -> str:
        result = self.client.render({"image_url": image_url, "audio_url": audio_url, **options},
                                    timeout_s=self.timeout_s)
        ref = result.video_ref()
        if ref is None:
            raise JobFailed("internal", "the endpoint returned no video")
        return ref


class DIDProvider:
    """D-ID's `POST /talks` (source image + audio script), polled until `done`."""

    name = "d-id"

    def __init__(self, api_key: str | None = None, base_url: str | None = None, timeout_s: float = 600.0,
                 poll_s: float = 2.0):
        key = api_key or os.environ.get("DID_API_KEY")
        if not key:
            raise AvatarError("engine_unavailable", "AVATAR_PROVIDER=d-id needs DID_API_KEY (the D-ID API key, "
                                                    "'user:secret' from studio.d-id.com); unset AVATAR_PROVIDER "
                                                    "to use this worker's endpoint instead")
        self.base = (base_url or os.environ.get("DID_API_BASE") or DID_API_BASE).rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Basic {key}", "Content-Type": "application/json"})
        self.timeout_s, self.poll_s = timeout_s, poll_s

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            resp = self.session.request(method, f"{self.base}{path}", json=body, timeout=(10, 60))
        except requests.RequestException as exc:
            raise AvatarError("fetch_failed", f"D-ID {path}: {type(exc).__name__}") from None
        if resp.status_code in (401, 403):
            raise AvatarError("engine_unavailable", f"D-ID refused the key (HTTP {resp.status_code})")
        if resp.status_code >= 400:
            code = "invalid_input" if resp.status_code < 500 else "internal"
            raise AvatarError(code, f"D-ID {path}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def render(self, image_url: str, audio_url: str, **options) -> str:
        body = {"source_url": image_url, "script": {"type": "audio", "audio_url": audio_url}}
        if options.get("config"):
            body["config"] = options["config"]
        talk = self._call("POST", "/talks", body)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            state = self._call("GET", f"/talks/{talk['id']}")
            if state.get("status") == "done":
                return state["result_url"]
            if state.get("status") in ("error", "rejected"):
                raise AvatarError("internal", f"D-ID talk {talk['id']} ended {state['status']}: "
                                              f"{state.get('error') or ''}")
            time.sleep(self.poll_s)
        raise AvatarError("timeout", f"D-ID talk {talk['id']} did not finish within {self.timeout_s:.0f} s")


_ALIASES = {"sadtalker": EndpointProvider, "endpoint": EndpointProvider, "runpod": EndpointProvider,
            "d-id": DIDProvider, "did": DIDProvider}


def get_provider(name: str | None = None, **kwargs) -> Provider:
    """The provider named by `name` or `AVATAR_PROVIDER` (default `sadtalker`, this endpoint)."""
    chosen = (name or os.environ.get("AVATAR_PROVIDER") or "sadtalker").strip().lower()
    cls = _ALIASES.get(chosen)
    if cls is None:
        raise ValueError(f"unknown AVATAR_PROVIDER {chosen!r}; use 'sadtalker' (this endpoint) or 'd-id'")
    return cls(**kwargs)
