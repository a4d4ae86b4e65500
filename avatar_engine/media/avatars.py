"""Named avatars: `avatar_id` in a request picks a stored portrait instead of sending one.

Portraits live in a baked folder (`AVATARS_DIR`, checked first) or in the media bucket under
`AVATARS_PREFIX`, one image file per avatar: `<avatar_id>.<png|jpg|jpeg|webp>`. The id is a flat
name, never a path: `..`, absolute paths, separators (also URL-encoded), backslashes and
control characters are refused, and a file whose real path leaves the folder (a symlink) is refused
too, so a request can only ever read the portraits the operator put there.

Faces are found once per avatar: `avatar_engine.face.locate.locate_face` caches its landmarks by the
content hash of the image, so a warm worker fits a named avatar's face once, not once per job.

The bucket is read through the `ObjectStore` protocol (`list` / `read`) of the delivery store, viewed
under `AVATARS_PREFIX` (`with_prefix`), so GCS and S3 behave alike and retries are the store's.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import AvatarError
from ..settings import Settings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class AvatarInfo:
    """One listed avatar: its id, where it is stored and how large the portrait file is."""

    id: str
    source: str  # "dir" or "bucket"
    file: str  # file name (dir) or object key (bucket)
    size_bytes: int

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "file": self.file, "size_bytes": self.size_bytes}


def check_avatar_id(avatar_id: str) -> str:
    """The id if it is a safe flat name; `invalid_input` naming the trick otherwise."""
    if not isinstance(avatar_id, str) or not avatar_id:
        raise AvatarError("invalid_input", "avatar_id must be a non-empty string")
    problems = [
        ("%" in avatar_id, "URL-encoded characters"),
        ("\\" in avatar_id, "backslashes"),
        (avatar_id.startswith("/") or re.match(r"^[A-Za-z]:", avatar_id) is not None, "absolute paths"),
        ("/" in avatar_id, "path separators"),
        (".." in avatar_id, "'..'"),
        (any(ord(c) < 32 or c == "\x7f" for c in avatar_id), "control characters"),
    ]
    for bad, what in problems:
        if bad:
            raise AvatarError("invalid_input", f"avatar_id must be a plain name; {what} are not allowed")
    if not _ID_RE.match(avatar_id):
        raise AvatarError("invalid_input", "avatar_id must be 1-128 letters, digits, '_', '-' or '.', "
                                           "starting with a letter or digit")
    return avatar_id


def _stem(name: str) -> str | None:
    p = Path(name)
    return p.stem if p.suffix.lower() in IMAGE_SUFFIXES and _ID_RE.match(p.stem) and ".." not in p.stem else None


# -- folder --------------------------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    """True when `path`'s real location (symlinks followed) is a regular file inside `root`."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_file() and real.is_relative_to(root.resolve())


def _dir_file(avatar_id: str, settings: Settings) -> Path | None:
    root = settings.avatars_dir
    if root is None or not root.is_dir():
        return None
    for suffix in IMAGE_SUFFIXES:
        candidate = root / f"{avatar_id}{suffix}"
        if candidate.is_symlink() or candidate.exists():
            if not _inside(candidate, root):
                raise AvatarError("invalid_input", f"avatar {avatar_id!r} points outside AVATARS_DIR; refused")
            return candidate
    return None


def _dir_list(settings: Settings) -> list[AvatarInfo]:
    root = settings.avatars_dir
    if root is None or not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        stem = _stem(path.name)
        if stem and _inside(path, root):
            out.append(AvatarInfo(stem, "dir", path.name, path.stat().st_size))
    return out


# -- bucket --------------------------------------------------------------------------------


def _avatar_store(settings: Settings):
    """The delivery store seen under AVATARS_PREFIX (same client), or None without a bucket."""
    from .delivery import get_store

    store = get_store(settings)
    return None if store is None else store.with_prefix(settings.avatars_prefix or "")


def _prefix(settings: Settings) -> str:
    p = (settings.avatars_prefix or "").strip("/")
    return f"{p}/" if p else ""


def _bucket_read(store, name: str, max_bytes: int) -> bytes | None:
    """The object's bytes, or None when it does not exist; `input_too_large` over `max_bytes`."""
    try:
        return store.read(name, max_bytes=max_bytes)
    except FileNotFoundError:
        return None
    except AvatarError as exc:
        if exc.code == "input_too_large":
            raise AvatarError("input_too_large", f"avatar {name!r} is over MAX_IMAGE_BYTES") from None
        raise AvatarError("fetch_failed", f"reading avatar {name!r} from the bucket failed") from None


def _bucket_entries(settings: Settings) -> list[AvatarInfo]:
    store = _avatar_store(settings)
    if store is None:
        return []
    out = []
    for name, size in store.list(""):
        stem = _stem(name) if "/" not in name else None
        if stem:
            out.append(AvatarInfo(stem, "bucket", f"{_prefix(settings)}{name}", size))
    return out


# -- public --------------------------------------------------------------------------------


def list_avatars(settings: Settings) -> list[AvatarInfo]:
    """Every avatar, folder first; an id in both places is served from the folder."""
    seen, out = set(), []
    for info in _dir_list(settings) + _bucket_entries(settings):
        if info.id not in seen:
            seen.add(info.id)
            out.append(info)
    return out


def load_avatar_image(avatar_id: str, settings: Settings) -> bytes:
    """The portrait bytes of `avatar_id`; `invalid_input` for unsafe ids, unknown avatars."""
    check_avatar_id(avatar_id)
    path = _dir_file(avatar_id, settings)
    if path is not None:
        size = path.stat().st_size
        if size > settings.max_image_bytes:
            raise AvatarError("input_too_large", f"avatar {avatar_id!r} is {size} bytes, over MAX_IMAGE_BYTES")
        return path.read_bytes()
    store = _avatar_store(settings)
    if store is not None:
        for suffix in IMAGE_SUFFIXES:
            data = _bucket_read(store, f"{avatar_id}{suffix}", settings.max_image_bytes)
            if data is not None:
                return data
    where = " or ".join(w for w, on in (("AVATARS_DIR", settings.avatars_dir is not None),
                                        ("the bucket under AVATARS_PREFIX", store is not None)) if on)
    raise AvatarError("invalid_input", f"unknown avatar_id {avatar_id!r}" +
                      (f" (looked in {where})" if where else " (no AVATARS_DIR or bucket is configured)"))
