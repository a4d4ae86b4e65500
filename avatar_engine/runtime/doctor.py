"""The model doctor: every checkpoint each engine would use, what it is, and whether it loads.

`python -m avatar_engine models` prints it (exit 1 when a file that is there cannot be loaded, or an
engine the image promises cannot run); health carries `summary()`, the cheap part (found / format /
size, from the first bytes of each file, cached per file identity) plus what a full run in this
process learnt. The strict loads use each engine's own loader, so "loads" here means "the worker loads it".
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..settings import Settings
from .inventory import checkpoint_path, component_files, license_policy, load_inventory
from .loading import sniff_checkpoint

_LOCK = threading.Lock()
_LOADED: dict[tuple, dict[str, Any]] = {}  # file identity -> what a full load found (params, dtype, loads...)
_SNIFFED: dict[tuple, tuple[str, str]] = {}  # file identity -> (format, detail)


@dataclass
class FileReport:
    """One manifest file as the doctor sees it."""

    key: str
    path: str
    found: bool
    license: str
    format: str | None = None  # FileKind.kind
    detail: str | None = None
    size: int | None = None
    dtype: str | None = None
    params: int | None = None
    loads: bool | None = None  # None: not tried
    form: str | None = None
    error: str | None = None
    todo: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    model_root: str
    image: str | None
    license_policy: str = "any"  # MODEL_LICENSES: "commercial" keeps non-commercial models out
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "model_root": self.model_root, "image": self.image,
                "license_policy": self.license_policy, "components": self.components, "problems": self.problems}


def _identity(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _loader(key: str) -> Callable[[Path], Any]:
    """The worker's own strict loader for manifest entry `key` (the generic reader for unknown entries)."""
    if key.startswith("wav2lip"):
        from ..engines.wav2lip.nets import load_wav2lip
        return load_wav2lip
    if key.startswith("gfpgan"):
        from ..stages.restore.nets import load_gfpgan
        return load_gfpgan
    if key.startswith("fomm"):
        from ..engines.fomm.checkpoints import load_fomm_nets
        return load_fomm_nets
    if key == "diff2lip":
        from ..engines.diff2lip.checkpoints import load_diff2lip
        return load_diff2lip
    if key in ("sadtalker_256", "sadtalker_512"):
        from ..engines.sadtalker.checkpoints import load_sadtalker_safetensors
        return load_sadtalker_safetensors
    if key.startswith("sadtalker_mapping"):
        from ..engines.sadtalker.checkpoints import load_mapping_checkpoint
        return load_mapping_checkpoint
    from .loading import read_checkpoint
    return read_checkpoint


def _tensors(obj: Any):
    """Every tensor inside a module, a dataclass of modules, or nested state dicts."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.parameters()
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from _tensors(getattr(obj, name))


def _load_facts(key: str, path: Path) -> dict[str, Any]:
    """Load `path` with the worker's loader: parameter count, dtype, form, or the loader's refusal."""
    from ..errors import AvatarError

    try:
        loaded = _loader(key)(path)
    except AvatarError as exc:
        return {"loads": False, "error": exc.message}
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return {"loads": False, "error": f"{type(exc).__name__}: {exc}"}
    tensors = [t for t in _tensors(loaded) if t.is_floating_point()]
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors})
    return {"loads": True, "params": int(sum(t.numel() for t in tensors)), "dtype": ",".join(dtypes) or None,
            "form": getattr(loaded, "checkpoint_form", None)}


def inspect_file(key: str, settings: Settings, *, load: bool) -> FileReport:
    """Found or missing, format, and (with `load`) whether the worker's loader takes it."""
    entry = load_inventory()["files"][key]
    path = checkpoint_path(key, settings)
    report = FileReport(key, str(path), path.is_file(), entry["license"])
    ident = _identity(path) if report.found else None
    if ident is None:
        report.found = False
        report.todo = (f"missing: put {Path(entry['path']).name} at {path} (mount it, or a network volume at "
                       f"MODEL_ROOT), or fetch it: python -m avatar_engine models --fetch <image>"
                       + (f" / MODEL_URLS='{key}=<url>'" if entry.get("sources") or entry.get("url") else ""))
        return report
    with _LOCK:
        sniffed = _SNIFFED.get(ident)
    if sniffed is None:
        kind = sniff_checkpoint(path, entry.get("size"))
        sniffed = (kind.kind, kind.detail)
        with _LOCK:
            _SNIFFED[ident] = sniffed
    report.format, report.detail, report.size = sniffed[0], sniffed[1], ident[1]
    with _LOCK:
        facts = _LOADED.get(ident)
    if facts is None and load:
        facts = _load_facts(key, path)
        with _LOCK:
            _LOADED[ident] = facts
    for name, value in (facts or {}).items():
        setattr(report, name, value)
    if report.loads is False:
        report.todo = (f"replace {path}: it is {report.detail}; fetch it again (python -m avatar_engine models "
                       f"--fetch <image>) or give a working link with MODEL_URLS='{key}=<url>'")
    return report


def _component(kind: str, name: str, settings: Settings, load: bool) -> dict[str, Any]:
    spec = load_inventory()[kind][name]
    files = {k: inspect_file(k, settings, load=load) for k in component_files(kind, name)}
    usable = [any(files[k].found and files[k].loads is not False for k in group) for group in spec.get("needs", [])]
    missing = [" or ".join(load_inventory()["files"][k]["path"] for k in group)
               for group, ok in zip(spec.get("needs", []), usable) if not ok]
    return {"kind": kind[:-1], "license": spec.get("license"), "can_run": not missing, "missing": missing,
            "files": [f.to_dict() for f in files.values()]}


def examine(settings: Settings, image: str | None = None, *, load: bool = True) -> Report:
    """The doctor's report; `problems` lists why it would exit nonzero."""
    inventory = load_inventory()
    if image is not None and image not in inventory["images"]:
        raise ValueError(f"unknown image {image!r}; known: {', '.join(sorted(inventory['images']))}")
    promised = inventory["images"][image] if image else {"engines": [], "stages": []}
    policy = license_policy(settings)
    report = Report(str(settings.model_root), image, policy["policy"])
    for kind in ("engines", "stages"):
        for name in inventory.get(kind, {}):
            comp = _component(kind, name, settings, load)
            comp["promised"] = name in promised.get(kind, [])
            # a model the license policy keeps out is reported, never counted as a broken promise
            comp["allowed"] = policy[kind].get(name, {}).get("allowed", True)
            report.components[name] = comp
            for f in comp["files"]:
                if f["found"] and f["loads"] is False and f"{f['path']}" not in " ".join(report.problems):
                    report.problems.append(f"{f['key']}: {f['path']} cannot be loaded: {f['error']}")
            if comp["promised"] and comp["allowed"] and not comp["can_run"]:
                report.problems.append(f"{name}: the {image} image promises it, but it lacks {'; '.join(comp['missing'])}")
    return report


def summary(settings: Settings) -> dict[str, Any]:
    """Health's cheap view: per file found / format / size, plus loads / form where this process knows."""
    files = {}
    for key in load_inventory()["files"]:
        rep = inspect_file(key, settings, load=False)
        files[key] = {"found": rep.found, "format": rep.format, "size": rep.size, "loads": rep.loads, "form": rep.form}
    broken = sorted(k for k, f in files.items() if f["found"] and (f["loads"] is False or f["format"] in
                                                                    ("html", "empty", "truncated", "unknown", "pickle")))
    return {"ok": not broken, "broken": broken, "files": files}


def render_text(report: Report) -> str:
    """The human table: one block per engine / stage, one line per file."""
    lines = [f"model root: {report.model_root}" + (f"   image: {report.image}" if report.image else "")
             + f"   license policy (MODEL_LICENSES): {report.license_policy}"]
    for name, comp in report.components.items():
        state = "can run" if comp["can_run"] else "cannot run (lacks " + "; ".join(comp["missing"]) + ")"
        if not comp.get("allowed", True):
            state = f"kept out by MODEL_LICENSES={report.license_policy} ({state})"
        lines.append(f"\n{comp['kind']} {name}{' [promised]' if comp['promised'] else ''}: {state}"
                     f" - license: {comp['license']}")
        for f in comp["files"]:
            if not f["found"]:
                lines.append(f"  - {f['key']}: missing ({f['path']})\n      todo: {f['todo']}")
                continue
            loads = {True: "loads strictly", False: "DOES NOT LOAD", None: "not loaded"}[f["loads"]]
            extra = f", {f['params']:,} params {f['dtype']}" if f["params"] is not None else ""
            form = f", {f['form']}" if f["form"] else ""
            lines.append(f"  - {f['key']}: {f['path']}: {f['format']}, {f['size']:,} bytes{extra}{form}: {loads}")
            if f["loads"] is False:
                lines.append(f"      why: {f['error']}\n      todo: {f['todo']}")
    lines.append("\nOK" if report.ok else "\nPROBLEMS:\n" + "\n".join(f"  - {p}" for p in report.problems))
    return "\n".join(lines)


def fetch_image(image: str, root: Path) -> int:
    """`--fetch IMAGE`: the builder's own code (resumable, verified, every source tried) into `root`."""
    try:
        from builder import fetch_models
    except ImportError:  # in an image the builder lives in /opt/builder
        import importlib.util

        spec = importlib.util.spec_from_file_location("fetch_models", "/opt/builder/fetch_models.py")
        fetch_models = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fetch_models)
    return fetch_models.main(["--image", image, "--root", str(root)])
