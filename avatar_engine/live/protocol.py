"""The `WS /live` message contract (docs/LIVE.md): the `start` message, control messages, close codes."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import AvatarError

# WebSocket close code per error code: standard codes where one fits, 4xxx (application) otherwise
CLOSE_NORMAL = 1000
CLOSE_CODES = {
    "invalid_input": 4400, "unsupported_media": 4415, "fetch_failed": 4424, "no_face": 4422,
    "engine_unavailable": 4503, "unauthorized": 4401, "busy": 1013, "timeout": 4408, "slow_client": 4429,
    "input_too_large": 1009, "internal": 1011,
}
SAMPLE_RATES = (16000, 24000, 48000)


def close_code(code: str) -> int:
    return CLOSE_CODES.get(code, 1011)


class StartMessage(BaseModel):
    """The first message of a session: the portrait, the picture and the audio format."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: Literal["start"]
    image_url: str | None = Field(None, max_length=4096)
    image_b64: str | None = None
    avatar_id: str | None = Field(None, max_length=128)
    size: int = Field(512, ge=64, le=1024)
    fps: int = Field(25, ge=10, le=60)
    engine: Literal["auto", "parametric"] = "auto"
    sample_rate: Literal[16000, 24000, 48000] = 16000
    format: Literal["s16le"] = "s16le"
    channels: Literal[1] = 1
    seed: int = Field(0, ge=0, le=2**31 - 1)
    still: bool = False
    language: str = Field("en", pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
    voice: str | None = Field(None, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+/()-]*$")

    @model_validator(mode="after")
    def _one_image(self) -> StartMessage:
        given = [n for n in ("image_url", "image_b64", "avatar_id") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of image_url, image_b64, avatar_id (got {len(given)})")
        return self


def _problem(err: dict) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        return f"unknown field '{loc}'"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def parse_json(text: str) -> dict:
    try:
        message = json.loads(text)
    except ValueError:
        raise AvatarError("invalid_input", "a text message must be one JSON object") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise AvatarError("invalid_input", 'a text message must be a JSON object with a "type"')
    return message


def parse_start(message: dict) -> StartMessage:
    if message.get("type") != "start":
        raise AvatarError("invalid_input", f'the first message must be {{"type": "start", ...}}, '
                                           f'got type {message.get("type")!r}')
    try:
        return StartMessage.model_validate(message)
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors(include_url=False)]
        raise AvatarError("invalid_input", "; ".join(problems), details={"fields": problems}) from None


def error_message(exc: AvatarError) -> dict:
    return {"type": "error", **exc.to_dict()}
