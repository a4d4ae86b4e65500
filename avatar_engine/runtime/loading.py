"""Reading official checkpoint files into state dicts and loading them strictly into the ports.

`sniff_checkpoint` says what a file is from its bytes alone (TorchScript archive, torch zip, legacy pickle,
safetensors, an HTML page, truncated, unknown), so every loader that refuses a file names what it got
instead of guessing. It uses only the standard library: the image builder loads this file by path to check
a download before it keeps it.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# A legacy (pre-1.6) torch.save file: pickle protocol 2, then the LONG1 magic number torch writes first.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<?xml", b"<!--")


@dataclass(frozen=True)
class FileKind:
    """What a checkpoint file holds: `kind` is a stable word, `detail` the human sentence."""

    kind: str  # torchscript torch-zip legacy-pickle safetensors | pickle html empty truncated missing unknown
    detail: str
    size: int = 0

    @property
    def loadable(self) -> bool:
        return self.kind in ("torchscript", "torch-zip", "legacy-pickle", "safetensors")


def _zip_kind(path: Path, size: int, expected: int | None) -> FileKind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return _truncated(size, expected, "a zip archive (torch.save or TorchScript) without its central directory")
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return FileKind("torchscript", f"a TorchScript archive ({size} bytes; load with torch.jit.load)", size)
    if any(n.endswith("data.pkl") for n in names):
        return FileKind("torch-zip", f"a torch.save zip archive ({size} bytes)", size)
    return FileKind("unknown", f"a zip archive that is not a torch file ({size} bytes; e.g. {names[:2]})", size)


def _safetensors_kind(path: Path, head: bytes, size: int, expected: int | None) -> FileKind | None:
    if len(head) < 9 or head[8:9] != b"{":
        return None
    header_len = struct.unpack("<Q", head[:8])[0]
    if header_len > 100_000_000:
        return None
    if size < 8 + header_len:
        return _truncated(size, expected, "a safetensors file cut inside its header")
    try:
        with open(path, "rb") as fh:
            fh.seek(8)
            header = json.loads(fh.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError):
        return FileKind("unknown", f"a file with a broken safetensors header ({size} bytes)", size)
    whole = 8 + header_len + end
    if size < whole:
        return _truncated(size, expected or whole, "a safetensors file")
    return FileKind("safetensors", f"a safetensors file ({size} bytes, {len(header) - ('__metadata__' in header)} tensors)",
                    size)


def _truncated(size: int, expected: int | None, what: str) -> FileKind:
    of = f" of {expected}" if expected else ""
    return FileKind("truncated", f"{what}, truncated at {size}{of} bytes (an interrupted download: fetch it again)",
                    size)


def sniff_checkpoint(path: str | os.PathLike, expected_size: int | None = None) -> FileKind:
    """What `path` holds, from its first bytes and (for zips) its directory; never unpickles anything."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        return FileKind("missing", f"cannot be opened ({type(exc).__name__}: {exc.strerror or exc})")
    if size == 0:
        return FileKind("empty", "is empty (0 bytes): the download failed", 0)
    if head.lstrip()[:64].lower().startswith(_HTML_STARTS):
        return FileKind("html", f"an HTML page ({size} bytes), not weights: the link led to a web page "
                                "(sign-in, quota or 'file not found'), not to the file", size)
    if expected_size and size < expected_size and not head.startswith(b"PK"):
        return _truncated(size, expected_size, "a file")
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path, size, expected_size)
    if head.startswith(_LEGACY_MAGIC):
        return FileKind("legacy-pickle", f"a legacy torch.save pickle ({size} bytes)", size)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return FileKind("pickle", f"a plain Python pickle ({size} bytes), not written by torch.save", size)
    safetensors = _safetensors_kind(path, head, size, expected_size)
    if safetensors is not None:
        return safetensors
    return FileKind("unknown", f"unknown bytes ({size} bytes, starting {head[:8].hex()}): not a checkpoint format "
                               "this worker reads", size)


def _unavailable(path: Path, what: str):
    from ..errors import AvatarError

    return AvatarError("engine_unavailable", f"checkpoint {path} {what}")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a `.pth`/`.pt`/`.tar` (torch, weights_only) or `.safetensors` file into a dict.

    A TorchScript archive is read with `torch.jit.load` and its `state_dict()` returned: that is how
    upstream's own Wav2Lip-SD-*.pt files hold their weights. Any refusal names what the file is."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise _unavailable(path, "does not exist")
    kind = sniff_checkpoint(path)
    if not kind.loadable:
        raise _unavailable(path, kind.detail if kind.kind == "empty" else f"could not be read: it is {kind.detail}")
    try:
        if kind.kind == "safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        if kind.kind == "torchscript":
            return dict(read_torchscript(path).state_dict())
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged archive, a pickle that carries code...
        raise _unavailable(path, f"is {kind.detail} but could not be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise _unavailable(path, f"is {kind.detail} holding a {type(obj).__name__}, not a state dict")
    return obj


def read_torchscript(path: str | os.PathLike):
    """The scripted module of a TorchScript archive, on the CPU, in eval mode."""
    import torch

    return torch.jit.load(str(path), map_location="cpu").eval()

def extract_state_dict(obj: dict, *, prefer: Iterable[str] = ("state_dict",), strip: Iterable[str] = ("module.",)) -> dict:
    """Unwrap `{"state_dict": ...}`-style containers and drop DataParallel-style key prefixes."""
    for key in prefer:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    out = {}
    for k, v in obj.items():
        for p in strip:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_strict(module, state_dict: dict, path: str | os.PathLike) -> None:
    """`load_state_dict(strict=True)` with an `engine_unavailable` error listing the mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_shape = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if bad_shape:
            parts.append(f"{len(bad_shape)} shape mismatches (e.g. {bad_shape[:2]})")
        raise _unavailable(Path(path), "does not match the network: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True)
