"""Named avatars: `avatar_id` in a request picks a stored portrait instead of sending one.

Portraits live in a baked folder (`AVATARS_DIR`, checked first) or in the media bucket under
`AVATARS_PREFIX`, one image file per avatar: `<avatar_id>.<png|jpg|jpeg|webp>` (the suffix in any case;
the id is the file's stem, exact case). Listing and serving pick the same file: where an id has several,
.png before .jpg before .jpeg before .webp; a folder file that is not a PNG/JPEG/WebP by its header, is over
MAX_IMAGE_BYTES or over MAX_IMAGE_PIXELS (a decompression bomb) is neither listed nor served, and bucket
objects over MAX_IMAGE_BYTES are skipped (their content is checked when decoded). The id is a flat
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
from functools import lru_cache
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


def _by_id(names) -> dict[str, list[str]]:
    """File names grouped by avatar id (the stem, exact case; the suffix in any case), each group in the one
    order listing and serving both follow: .png, .jpg, .jpeg, .webp, then by name."""
    groups: dict[str, list[str]] = {}
    for name in names:
        stem = _stem(name)
        if stem:
            groups.setdefault(stem, []).append(name)
    rank = {suffix: i for i, suffix in enumerate(IMAGE_SUFFIXES)}
    return {stem: sorted(found, key=lambda n: (rank[Path(n).suffix.lower()], n)) for stem, found in groups.items()}


# -- folder --------------------------------------------------------------------------------


def _inside(path: Path, root: Path) -> bool:
    """True when `path`'s real location (symlinks followed) is a regular file inside `root`."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_file() and real.is_relative_to(root.resolve())


@lru_cache(maxsize=1024)
def _image_ok(path: str, mtime_ns: int, size: int, max_bytes: int, max_pixels: int) -> bool:
    """A PNG/JPEG/WebP within the byte and pixel caps, judged from its header (no pixels are decoded)."""
    if size > max_bytes:
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:  # reads the header only
            return image.format in ("PNG", "JPEG", "WEBP") and image.width * image.height <= max_pixels
    except Exception:  # noqa: BLE001 - not an image, truncated, or over PIL's own bomb limit
        return False


def _usable(path: Path, settings: Settings) -> bool:
    info = path.stat()
    return _image_ok(str(path.resolve()), info.st_mtime_ns, info.st_size, settings.max_image_bytes,
                     settings.max_image_pixels)


def _dir_pick(avatar_id: str, names: list[str], root: Path, settings: Settings) -> Path | None:
    """The first usable file of an id's group; a file that leaves the folder refuses the id outright."""
    for name in names:
        path = root / name
        if not _inside(path, root):
            raise AvatarError("invalid_input", f"avatar {avatar_id!r} points outside AVATARS_DIR; refused")
        if _usable(path, settings):
            return path
    return None


def _dir_groups(settings: Settings) -> dict[str, list[str]]:
    root = settings.avatars_dir
    if root is None or not root.is_dir():
        return {}
    return _by_id(entry.name for entry in root.iterdir())


def _dir_file(avatar_id: str, settings: Settings) -> Path | None:
    names = _dir_groups(settings).get(avatar_id)
    return _dir_pick(avatar_id, names, settings.avatars_dir, settings) if names else None


def _dir_list(settings: Settings) -> list[AvatarInfo]:
    out = []
    for avatar_id, names in sorted(_dir_groups(settings).items()):
        try:
            path = _dir_pick(avatar_id, names, settings.avatars_dir, settings)
        except AvatarError:
            continue  # refused when asked for: not listed
        if path is not None:
            out.append(AvatarInfo(avatar_id, "dir", path.name, path.stat().st_size))
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


def _bucket_groups(store, settings: Settings) -> dict[str, list[tuple[str, int]]]:
    """Avatar id -> its (object name, size) candidates under the prefix, in serving order, within MAX_IMAGE_BYTES
    (a bucket object's content is checked when it is used: decoding caps its pixels)."""
    sizes = {name: size for name, size in store.list("") if "/" not in name and size <= settings.max_image_bytes}
    return {stem: [(name, sizes[name]) for name in names] for stem, names in _by_id(sizes).items()}


def _bucket_entries(settings: Settings) -> list[AvatarInfo]:
    store = _avatar_store(settings)
    if store is None:
        return []
    return [AvatarInfo(stem, "bucket", f"{_prefix(settings)}{found[0][0]}", found[0][1])
            for stem, found in sorted(_bucket_groups(store, settings).items())]


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
        found = _bucket_groups(store, settings).get(avatar_id)  # the object listing names, never a guess
        data = _bucket_read(store, found[0][0], settings.max_image_bytes) if found else None
        if data is not None:
            return data
    where = " or ".join(w for w, on in (("AVATARS_DIR", settings.avatars_dir is not None),
                                        ("the bucket under AVATARS_PREFIX", store is not None)) if on)
    raise AvatarError("invalid_input", f"unknown avatar_id {avatar_id!r}" +
                      (f" (looked in {where})" if where else " (no AVATARS_DIR or bucket is configured)"))
