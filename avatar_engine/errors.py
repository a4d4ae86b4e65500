"""The one error type every stage raises, with a stable machine code callers can branch on."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

ErrorCode = Literal[
    "invalid_input",
    "fetch_failed",
    "unsupported_media",
    "input_too_large",
    "no_face",
    "engine_unavailable",
    "upload_failed",
    "timeout",
    "internal",
    "unauthorized",  # live sessions: missing or wrong LIVE_TOKEN
    "busy",  # live sessions: the concurrent-session cap is reached
    "slow_client",  # live sessions: the client reads slower than real time
]


class AvatarError(Exception):
    """A failure the caller can act on: `code` is stable, `message` is for humans."""

    def __init__(self, code: ErrorCode, message: str, *, details: dict | None = None):
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"AvatarError({self.code!r}, {self.message!r})"


def parse_error(error: Any) -> dict:
    """The `{"code", "message"}` dict inside a job's error, for clients.

    The worker sends `{"error": "<JSON string>"}` (serving.worker.error_result); a proxy may pass the dict
    itself, and anything else (a platform's own error text) reads as `internal` with that text.
    """
    if isinstance(error, dict):
        return error
    if isinstance(error, (str, bytes, bytearray)):
        try:
            body = json.loads(error)
        except ValueError:
            body = None
        if isinstance(body, dict) and "code" in body:
            return body
    return {"code": "internal", "message": str(error)}


# an absolute POSIX path (not the path part of a URL: no ':', '/' or word character before it)
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.@+~-]+/)*([\w.@+~-]+)?/?")


def redact_paths(text: str) -> str:
    """`text` with every absolute path cut to its last component: messages that leave the worker name
    the file (`wav2lip_gan.pth`), never where it lives (`/models/wav2lip/...`)."""
    return _ABS_PATH.sub(lambda m: m.group(1) or "<dir>", text) if "/" in text else text
