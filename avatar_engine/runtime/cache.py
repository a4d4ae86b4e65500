"""Loaded models per process, keyed by the files they came from, so a replaced file reloads."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, Hashable, TypeVar

from ..errors import AvatarError

T = TypeVar("T")


def file_key(*paths: Path) -> tuple:
    """Identity of checkpoint files: resolved path and modification time, so a replaced file reloads."""
    out = []
    for path in paths:
        try:
            resolved = Path(path).resolve()
            out.append((str(resolved), resolved.stat().st_mtime_ns))
        except OSError:
            raise AvatarError("engine_unavailable", f"checkpoint {path} does not exist") from None
    return tuple(out)


@dataclass
class ModelCache(Generic[T]):
    """Loaded models per process, keyed by what they were loaded from (see `file_key`).

    `max_entries` bounds memory: the oldest entry is dropped first. Loading happens under the lock, so
    two jobs asking for the same model at once load it once.
    """

    max_entries: int = 4
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _items: dict[Hashable, T] = field(default_factory=dict, repr=False)

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                return self._items[key]
            value = load()
            self._items[key] = value
            while len(self._items) > self.max_entries:
                self._items.pop(next(iter(self._items)))
            return value

    def find(self, match: Callable[[Hashable], bool]) -> T | None:
        """A cached value whose key satisfies `match` (e.g. a sibling that shares networks)."""
        with self._lock:
            return next((v for k, v in self._items.items() if match(k)), None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
