"""`report.json`: the versioned record of one evaluation (schema in docs/EVALUATE.md).

The report names everything a figure depends on: the machine the evaluator ran on (CPU, cores, GPU,
memory), the target (and, for a remote one, the worker's own `health` answer: its device and engines),
the package versions, and per run the engine chain that actually rendered.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from statistics import median

from ..runtime.device import cuda_devices

SCHEMA = "avatar-evaluate"
SCHEMA_VERSION = 1
_PACKAGES = ("avatar-renderer", "torch", "av", "numpy", "opencv-python-headless", "runpod", "espeakng-loader",
             "pocketsphinx", "matplotlib")


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), or what the platform module knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[dict]:
    """CUDA devices: from torch when a neural engine already imported it, else from `nvidia-smi` (no torch
    import just to look), else none."""
    devices = cuda_devices(import_torch=False)
    if devices:
        return devices
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        name, _, mib = line.rpartition(",")
        if name.strip():
            gpus.append({"name": name.strip(), "memory_gb": round(float(mib) / 1024, 1) if mib.strip() else None})
    return gpus


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict:
    """The machine the evaluator runs on (for `local`, also the machine that rendered)."""
    return {"hostname": platform.node(), "os": platform.platform(), "python": platform.python_version(),
            "cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": _memory_gb(), "gpus": _gpus()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    out: dict = {"git": _git_commit()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(median(values), 3) if values else None


def summarize(runs: list[dict]) -> dict:
    """Counts and medians over the runs (the HTML headline and the baseline's suite-level check)."""
    ok = [r for r in runs if r["status"] == "ok"]
    checks = [all(r["output"].get(k) for k in ("plays", "duration_ok", "h264_aac", "faststart")) for r in ok]
    return {
        "runs": len(runs), "ok": len(ok), "failed": sum(r["status"] == "failed" for r in runs),
        "expected_errors": sum(r["status"] == "expected_error" for r in runs),
        "languages": sorted({r["language"] for r in runs if r.get("language")}),
        "median_x_real_time": _median([r["x_real_time"] for r in ok]),
        "median_latency_s": _median([r["latency_s"] for r in ok]),
        "median_sync_confidence": _median([r["sync"]["confidence"] for r in ok if r.get("sync")]),
        "output_checks_passed": sum(checks),
        "error_codes": sorted({r["error"]["code"] for r in runs if r.get("error")}),
    }


def build_report(*, target: dict, suite: dict, engines: list[str], runs: list[dict], started: float,
                 finished: float) -> dict:
    """The whole report dict; `started`/`finished` are epoch seconds."""
    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")

    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "started_at": iso(started),
            "finished_at": iso(finished), "duration_s": round(finished - started, 1), "machine": machine_info(),
            "versions": versions(), "target": target, "suite": suite, "engines": engines,
            "summary": summarize(runs), "runs": runs}


def write_report(report: dict, out_dir: Path) -> Path:
    path = out_dir / "report.json"
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_report(path: str | Path) -> dict:
    """A report written by this or an earlier evaluator of the same schema version."""
    from ..errors import AvatarError

    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AvatarError("invalid_input", f"report {path}: {exc}") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise AvatarError("invalid_input", f"report {path}: not an evaluate report (no `schema: {SCHEMA}`)")
    if report.get("schema_version") != SCHEMA_VERSION:
        raise AvatarError("invalid_input", f"report {path}: schema version {report.get('schema_version')}, "
                                           f"this evaluator reads {SCHEMA_VERSION}")
    return report
