"""Requests that answer without rendering: `{"input": {"action": "<name>", ...}}`.

Each action is a function `(params: dict, settings: Settings) -> dict` registered by name; the worker
dispatches here before parsing a render request, so a render payload never needs an `action` key.
"""

from __future__ import annotations

from typing import Callable

from .errors import AvatarError
from .settings import Settings

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
    from .engines import list_engines

    return {"engines": list_engines(settings)}
