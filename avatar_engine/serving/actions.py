"""Requests that answer without rendering: `{"input": {"action": "<name>", ...}}`.

Each action is a function `(params: dict, settings: Settings) -> dict` registered by name; the worker
dispatches here before parsing a render request, so a render payload never needs an `action` key.
"""

from __future__ import annotations

from typing import Callable

from ..errors import AvatarError
from ..settings import Settings

Action = Callable[[dict, Settings], dict]
ACTIONS: dict[str, Action] = {}


def action(name: str):
    """Decorator: register `fn` as the handler of `{"action": name}`."""

    def register(fn: Action) -> Action:
        ACTIONS[name] = fn
        return fn

    return register


def run_action(payload: dict, settings: Settings) -> dict:
    name = payload.get("action")
    fn = ACTIONS.get(name) if isinstance(name, str) else None
    if fn is None:
        known = ", ".join(sorted(ACTIONS)) or "none"
        raise AvatarError("invalid_input", f"unknown action {name!r}; known actions: {known}")
    params = {k: v for k, v in payload.items() if k != "action"}
    return fn(params, settings)


@action("list_engines")
def _list_engines(params: dict, settings: Settings) -> dict:
    """Per engine: available, reason, license, whether `auto` picks it, checkpoint files (see health)."""
    from .health import auto_chain, engine_reports

    return {"engines": engine_reports(settings), "auto_chain": auto_chain(settings)}


@action("health")
def _health(params: dict, settings: Settings) -> dict:
    """Device, free GPU memory, NVENC, engines and their checkpoints; never renders (avatar_engine/serving/health.py)."""
    from .health import health

    return health(settings)


@action("list_avatars")
def _list_avatars(params: dict, settings: Settings) -> dict:
    from ..media.avatars import list_avatars

    return {"avatars": [a.to_dict() for a in list_avatars(settings)]}


@action("list_voices")
def _list_voices(params: dict, settings: Settings) -> dict:
    from ..speech.piper import available_voices
    from ..speech.tts import espeak_voices

    return {"voices": espeak_voices() + [{"voice": f"piper:{name}", "name": name, "languages": []}
                                         for name in available_voices(settings)]}
