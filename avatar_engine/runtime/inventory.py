"""The model inventory: every checkpoint file the worker knows, its source and license, and what is on disk.

The data lives in `avatar_engine/runtime/models.json`, the single source of truth shared with the image builder
(`builder/fetch_models.py` downloads from it and verifies against it). This module only answers cheap
questions about files that exist here: found or missing, size against the manifest, and whether the
builder's verification record (`<file>.verified.json`, written after a sha256 check) still describes the
file. It never hashes a checkpoint: a health call must answer in milliseconds, not minutes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..settings import Settings

MANIFEST_PATH = Path(__file__).with_name("models.json")
RECORD_SUFFIX = ".verified.json"  # written by builder/fetch_models.py next to each verified file

# Environment overrides (Settings fields) that name a folder rather than a file.
_DIR_OVERRIDES = {"SADTALKER_CKPT_DIR"}
# ... and those that name a whole model tree (upstream's own layout): the path below its first folder is kept.
_TREE_OVERRIDES = {"MUSETALK_DIR"}


@lru_cache(maxsize=1)
def load_inventory() -> dict[str, Any]:
    return json.loads(MANIFEST_PATH.read_text())


@dataclass(frozen=True)
class CheckpointStatus:
    """One checkpoint file as found on this machine; `checksum` is verified / unverified / mismatch / None."""

    path: str
    found: bool
    size: int | None
    expected_size: int | None
    size_ok: bool | None
    checksum: str | None
    sha256_published: bool
    license: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def checkpoint_names(folder: str) -> tuple[str, ...]:
    """The file names looked for under MODEL_ROOT/<folder>/, best first: the manifest's files of that folder
    in manifest order, then the names it also accepts there (`accepted`)."""
    inventory = load_inventory()
    listed = [entry["path"].split("/", 1)[1] for entry in inventory["files"].values()
              if entry["path"].split("/", 1)[0] == folder]
    return tuple(listed + list(inventory.get("accepted", {}).get(folder, ())))


def checkpoint_path(key: str, settings: Settings) -> Path:
    """Where the worker looks for manifest entry `key`: its override (file, or folder + file name) if set,
    else MODEL_ROOT / its manifest path. Overrides are Settings fields, so an engine not built yet reads none."""
    entry = load_inventory()["files"][key]
    env = entry.get("override_env")
    override = getattr(settings, env.lower(), None) if env else None
    if override and env in _TREE_OVERRIDES:
        return Path(override).joinpath(*Path(entry["path"]).parts[1:])
    if override:
        return Path(override) / Path(entry["path"]).name if env in _DIR_OVERRIDES else Path(override)
    return Path(settings.model_root) / entry["path"]


def _checksum_status(path: Path, size: int, mtime: float, published: str | None) -> str:
    if not published:
        return "unverified"
    try:
        record = json.loads(path.with_name(path.name + RECORD_SUFFIX).read_text())
    except (OSError, ValueError):
        return "unverified"
    if not isinstance(record, dict) or record.get("size") != size or record.get("mtime") != int(mtime):
        return "unverified"  # the file changed since it was checked
    return "verified" if str(record.get("sha256", "")).lower() == published.lower() else "mismatch"


def checkpoint_status(key: str, settings: Settings) -> CheckpointStatus:
    entry = load_inventory()["files"][key]
    path = checkpoint_path(key, settings)
    expected = entry.get("size")
    try:
        st = path.stat()
        found = path.is_file()
    except OSError:
        st, found = None, False
    if not found:
        return CheckpointStatus(str(path), False, None, expected, None, None, bool(entry.get("sha256")),
                                entry["license"], entry["source"])
    size_ok = None if expected is None else st.st_size == expected
    checksum = _checksum_status(path, st.st_size, st.st_mtime, entry.get("sha256"))
    return CheckpointStatus(str(path), True, st.st_size, expected, size_ok, checksum, bool(entry.get("sha256")),
                            entry["license"], entry["source"])


def component_files(kind: str, name: str) -> list[str]:
    """Manifest keys an engine (`kind="engines"`) or stage (`"stages"`) can use: its needs, then optional ones."""
    spec = load_inventory()[kind].get(name, {})
    keys = [k for group in spec.get("needs", []) for k in group]
    return keys + [k for k in spec.get("optional", []) if k not in keys]


def component_report(kind: str, name: str, settings: Settings) -> dict[str, Any]:
    """License, per-file status, and which requirement groups have no usable file (missing `needs`)."""
    spec = load_inventory()[kind].get(name)
    if spec is None:
        return {"license": None, "checkpoints": {}, "missing": []}
    files = {k: checkpoint_status(k, settings) for k in component_files(kind, name)}
    missing = [" or ".join(load_inventory()["files"][k]["path"] for k in group)
               for group in spec.get("needs", [])
               if not any(files[k].found and files[k].size_ok is not False and files[k].checksum != "mismatch"
                          for k in group)]
    return {"license": spec["license"], "checkpoints": {k: s.to_dict() for k, s in files.items()}, "missing": missing}


# --- the license policy (MODEL_LICENSES) ------------------------------------------------------------


def commercial_use(name: str, kind: str = "engines") -> bool:
    """Whether the manifest says the licenses of engine (or stage) `name` allow commercial use; unknown: no."""
    return bool(load_inventory()[kind].get(name, {}).get("commercial_use", False))


def license_block(name: str, settings: Settings, kind: str = "engines") -> str | None:
    """Why MODEL_LICENSES keeps `name` from running here (the reason names its license), or None."""
    if settings.model_licenses != "commercial" or commercial_use(name, kind):
        return None
    spec = load_inventory()[kind].get(name, {})
    return (f"MODEL_LICENSES=commercial and {name}'s license does not allow commercial use "
            f"({spec.get('license', 'license unknown')})")


def license_policy(settings: Settings) -> dict[str, Any]:
    """The policy and, per engine and stage, its license and whether the policy lets it run (health, doctor)."""
    out: dict[str, Any] = {"policy": settings.model_licenses}
    for kind in ("engines", "stages"):
        out[kind] = {name: {"license": spec["license"], "commercial_use": commercial_use(name, kind),
                            "allowed": license_block(name, settings, kind) is None}
                     for name, spec in load_inventory()[kind].items()}
    return out


def models_used(stages: list[str]) -> list[dict[str, Any]]:
    """What a result lists: each stage that made it, with its license and whether that allows commercial use."""
    inventory = load_inventory()
    out = []
    for name in dict.fromkeys(stages):
        kind = "stages" if name in inventory["stages"] else "engines"
        spec = inventory[kind].get(name, {})
        out.append({"name": name, "license": spec.get("license"), "commercial_use": commercial_use(name, kind)})
    return out
