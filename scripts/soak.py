"""Soak a warm worker: N mixed jobs in one process through run_job, measuring what a long-lived
Runpod worker would leak (memory, file descriptors, threads, temp files) and how fast it goes.

    python scripts/soak.py --jobs 500 [--json]

Valid jobs are small renders (size 128-256, clips under 1.1 s, base64 and path delivery); invalid
ones are the no-server cases of tests/corpus/cases.json (bad media, bad fields, refused URLs; the
guard runs in production mode, so nothing is ever fetched). Exits 1 when a target is missed:
RSS growth after warm-up above --max-rss-growth-mb, any leaked fd, thread or temp file, or any job
answering differently from what it should.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.make_corpus import CORPUS, expand, load_manifest, needs_server  # noqa: E402

VALID_AUDIO = ("speech-0.5s.wav", "mp3-1s.mp3", "wav-noise.wav", "wav-8ch.wav", "wav-192khz.wav")
VALID_IMAGES = ("portrait.jpg", "portrait.png", "image-animated.gif")
SIZES = (128, 160, 192, 224, 256)


def rss_bytes() -> int:
    try:
        import psutil
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("cannot read RSS: no psutil and no /proc/self/status") from None
    return psutil.Process().memory_info().rss


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def files_under(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots if root.exists() for p in root.rglob("*"))


def valid_job(i: int) -> tuple[dict, str]:
    """The i-th small valid render, cycling through images, clips, sizes and deliveries."""
    path = i % 3 == 0
    payload = {
        "image_b64": f"{{b64:{VALID_IMAGES[i % len(VALID_IMAGES)]}}}",
        "audio_b64": f"{{b64:{VALID_AUDIO[i % len(VALID_AUDIO)]}}}",
        "size": SIZES[i % len(SIZES)],
        "seed": i,
        "output": {"delivery": "path", "name": f"soak-{i}.mp4"} if path else {"delivery": "base64"},
    }
    return payload, f"valid:{payload['image_b64'][5:-1]}+{payload['audio_b64'][5:-1]}@{payload['size']}"


def invalid_cases() -> list[dict]:
    """Corpus cases that need no server, expect an error and reproduce no known bug."""
    return [c for c in load_manifest()["cases"]
            if c["expect"] != ["ok"] and not needs_server(c) and "xfail" not in c]


def check(result: dict, expect: list[str], output_dir: Path) -> str | None:
    """None when the job answered as it should, else what went wrong."""
    from avatar_engine.errors import parse_error

    if not isinstance(result, dict):
        return f"returned {type(result).__name__}"
    if expect != ["ok"]:
        if "error" not in result:
            return f"rendered, expected {expect}"
        code = parse_error(result["error"])["code"]
        return None if code in expect else f"code {code}, expected {expect}"
    if "error" in result:
        return f"failed: {parse_error(result['error'])}"
    if "video_path" in result:
        target = Path(result["video_path"])
        if target.parent != output_dir.resolve() or target.stat().st_size != result["video_bytes"]:
            return f"bad path delivery {result['video_path']}"
        target.unlink()  # the caller took it
    elif len(base64.b64decode(result["video_b64"])) != result["video_bytes"]:
        return "base64 length mismatch"
    return None if result.get("frames", 0) > 0 else "no frames"


def soak(n_jobs: int, warmup: int, root: Path) -> dict:
    from avatar_engine.serving.worker import run_job, warm_up
    from avatar_engine.settings import Settings

    work, tmp, out = root / "work", root / "tmp", root / "out"
    for d in (work, tmp, out):
        d.mkdir()
    tempfile.tempdir = str(tmp)  # anything using the system temp dir lands where we can count it
    os.environ["TMPDIR"] = str(tmp)
    base = Settings(allow_private_urls=False, fetch_connect_timeout_s=1.0, fetch_read_timeout_s=1.0,
                    fetch_total_timeout_s=1.5, work_dir=work, output_dir=out, model_root=root / "no-models",
                    media_bucket=None, bucket_endpoint_url=None)
    variants: dict[str, Settings] = {}  # one Settings per override set, as a real worker has one in all

    def settings_for(case: dict) -> Settings:
        key = json.dumps(case.get("settings", {}), sort_keys=True)
        if key not in variants:
            variants[key] = base.model_copy(update=case.get("settings", {}))
        return variants[key]

    warm_up()
    bad = invalid_cases()
    latencies: dict[str, list[float]] = {"valid": [], "invalid": []}
    failures: list[dict] = []
    rss_trace: list[int] = []
    baseline: dict = {}
    started = time.perf_counter()
    for i in range(n_jobs):
        if i % 2 == 0:
            template, label = valid_job(i // 2)
            case = {"name": label, "expect": ["ok"]}
        else:
            case = bad[(i // 2) % len(bad)]
            template, label = case["input"], case["name"]
        t0 = time.perf_counter()
        result = run_job({"id": f"soak-{i}", "input": expand(template, CORPUS)}, settings=settings_for(case))
        latencies["valid" if case["expect"] == ["ok"] else "invalid"].append(time.perf_counter() - t0)
        problem = check(result, case["expect"], out)
        if problem:
            failures.append({"job": i, "case": label, "problem": problem})
        if i + 1 == warmup:
            gc.collect()
            baseline = {"rss": rss_bytes(), "fds": open_fds(), "threads": threading.active_count()}
        if (i + 1) % max(1, n_jobs // 20) == 0:
            rss_trace.append(rss_bytes())
    elapsed = time.perf_counter() - started
    gc.collect()
    end = {"rss": rss_bytes(), "fds": open_fds(), "threads": threading.active_count()}
    left = files_under(work, tmp, out)

    def summary(xs: list[float]) -> dict:
        xs = sorted(xs)
        return {"n": len(xs), "p50_ms": round(1000 * xs[len(xs) // 2], 1) if xs else None,
                "max_ms": round(1000 * xs[-1], 1) if xs else None}

    mb = 1024 * 1024
    return {
        "jobs": n_jobs,
        "warmup_jobs": warmup,
        "seconds": round(elapsed, 2),
        "jobs_per_s": round(n_jobs / elapsed, 2),
        "latency": {k: summary(v) for k, v in latencies.items()},
        "rss_mb_after_warmup": round(baseline["rss"] / mb, 1),
        "rss_mb_end": round(end["rss"] / mb, 1),
        "rss_growth_mb": round((end["rss"] - baseline["rss"]) / mb, 1),
        "rss_mb_trace": [round(r / mb, 1) for r in rss_trace],
        "fds_after_warmup": baseline["fds"],
        "fds_end": end["fds"],
        "fds_leaked": max(0, end["fds"] - baseline["fds"]),
        "threads_after_warmup": baseline["threads"],
        "threads_end": end["threads"],
        "threads_leaked": max(0, end["threads"] - baseline["threads"]),
        "temp_files_left": left,
        "failures": failures,
    }


def missed_targets(report: dict, max_rss_growth_mb: float) -> list[str]:
    missed = []
    if report["rss_growth_mb"] > max_rss_growth_mb:
        missed.append(f"RSS grew {report['rss_growth_mb']} MB after warm-up (limit {max_rss_growth_mb})")
    for key in ("fds_leaked", "threads_leaked"):
        if report[key]:
            missed.append(f"{key}: {report[key]}")
    if report["temp_files_left"]:
        missed.append(f"{len(report['temp_files_left'])} temp files left")
    if report["failures"]:
        missed.append(f"{len(report['failures'])} jobs answered wrongly")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--warmup", type=int, help="jobs before the baseline is taken (default: 20%%, at least 10)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(args.jobs, max(10, args.jobs // 5))
    if not 0 < warmup <= args.jobs:
        parser.error("need 0 < warmup <= jobs")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    root = Path(tempfile.mkdtemp(prefix="avatar-soak-"))
    try:
        report = soak(args.jobs, warmup, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    missed = missed_targets(report, args.max_rss_growth_mb)
    report["missed_targets"] = missed
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        lat = report["latency"]
        print(f"{report['jobs']} jobs in {report['seconds']} s ({report['jobs_per_s']} jobs/s); "
              f"valid p50 {lat['valid']['p50_ms']} ms, invalid p50 {lat['invalid']['p50_ms']} ms")
        print(f"RSS {report['rss_mb_after_warmup']} -> {report['rss_mb_end']} MB "
              f"(growth {report['rss_growth_mb']} MB after {warmup} warm-up jobs); trace {report['rss_mb_trace']}")
        print(f"fds {report['fds_after_warmup']} -> {report['fds_end']}, threads {report['threads_after_warmup']} -> "
              f"{report['threads_end']}, temp files left {len(report['temp_files_left'])}, "
              f"failures {len(report['failures'])}")
        for failure in report["failures"][:20]:
            print(f"  job {failure['job']} {failure['case']}: {failure['problem']}")
        print("OK" if not missed else "MISSED: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
