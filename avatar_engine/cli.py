"""`python -m avatar_engine`: render local files, list engines, batch-submit to the endpoint, evaluate, serve MCP.

Local paths are allowed here (and in the MCP server on the caller's machine) only."""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
from pathlib import Path

from .errors import AvatarError
from .settings import get_settings


def read_local_file(path: str, max_bytes: int, what: str) -> bytes:
    """A local input file's bytes, checked before reading: a regular file (not /dev/zero, a FIFO or a
    folder) of at most `max_bytes` (the same caps as remote inputs)."""
    info = os.stat(path)  # OSError (missing, no permission) is reported by the caller
    if not stat.S_ISREG(info.st_mode):
        raise AvatarError("invalid_input", f"{what} {path!r} is not a regular file")
    if info.st_size > max_bytes:
        raise AvatarError("input_too_large", f"{what} {path!r} is {info.st_size} bytes, over the {max_bytes}-byte "
                                             "limit")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # a file that grew since stat() is still capped
    if len(data) > max_bytes:
        raise AvatarError("input_too_large", f"{what} {path!r} is over the {max_bytes}-byte limit")
    if not data:
        raise AvatarError("invalid_input", f"{what} {path!r} is empty")
    return data


def _local_inputs(args):
    from .pipeline import LocalInputs

    settings = get_settings()
    audio = read_local_file(args.audio, settings.max_audio_bytes, "--audio") if args.audio else None
    video = read_local_file(args.reference_video, settings.max_video_bytes, "--reference-video") \
        if args.reference_video else None
    return LocalInputs(image=read_local_file(args.face, settings.max_image_bytes, "--face"), audio=audio,
                       reference_video=video)


def _render(args) -> int:
    from tqdm import tqdm

    from .pipeline import render
    from .schema import parse_request

    options = {
        "engine": args.engine, "quality_mode": args.mode, "fps": args.fps, "size": args.size, "seed": args.seed,
        "still": args.still, "lipsync": args.lipsync, "qa": args.qa, "on_no_face": args.on_no_face,
        "output": {"delivery": "path"},
    }
    for key in ("transcript", "text", "voice", "language", "captions"):
        if getattr(args, key):
            options[key] = getattr(args, key)
    if (args.audio is None) == (args.text is None):
        print("error: give exactly one of --audio or --text", file=sys.stderr)
        return 2
    if args.reference_video and args.engine not in ("auto", "fomm"):
        print("error: --reference-video drives the fomm engine (use --engine fomm or auto)", file=sys.stderr)
        return 2
    bar = tqdm(total=100, desc="fetch", unit="%", bar_format="{desc:<8} {bar} {percentage:3.0f}%", file=sys.stderr)

    def progress(stage: str, fraction: float) -> None:
        bar.set_description_str(stage)
        bar.n = int(fraction * 100) if stage == "render" else bar.n
        bar.refresh()

    try:
        request = parse_request(options, local=True)
        result = render(request, local=_local_inputs(args), progress=progress, out_path=args.out)
    except OSError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AvatarError as exc:
        bar.close()
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 1
    bar.n = 100
    bar.close()
    print(json.dumps(result, indent=2))
    return 0


def _list_engines(_args) -> int:
    from .engines import list_engines

    print(json.dumps(list_engines(get_settings()), indent=2))
    return 0


def _batch(args) -> int:
    from .clients.batch import BatchOptions, run_batch

    options = BatchOptions(concurrency=args.concurrency, retries=args.retries, timeout_s=args.timeout,
                           download=args.download, retry_failed=args.retry_failed, progress=not args.quiet)
    try:
        summary = run_batch(args.manifest, out_dir=args.out_dir, options=options)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict(), indent=2))
    if summary.interrupted:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if summary.failed == 0 and summary.pending == 0 else 1


def _evaluate(args) -> int:
    from .evaluate import EvaluateOptions, evaluate

    engines = [name for item in args.engines for name in item.split(",") if name]
    options = EvaluateOptions(out_dir=Path(args.out), target=args.target, suite=args.suite, quick=args.quick,
                              engines=engines, baseline=args.baseline, timeout_s=args.timeout)
    try:
        evaluation = evaluate(options)
    except AvatarError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(evaluation.report["summary"], indent=2))
    print(f"wrote {Path(args.out) / 'report.json'} and {Path(args.out) / 'report.html'}", file=sys.stderr)
    for regression in evaluation.regressions:
        print(f"REGRESSION {regression.message}", file=sys.stderr)
    for run in evaluation.report["runs"]:
        if run["status"] == "failed":
            print(f"FAILED {run['id']}: [{run['error']['code']}] {run['error']['message']}", file=sys.stderr)
    return evaluation.exit_code


def _models(args) -> int:
    from .runtime.doctor import examine, fetch_image, render_text

    settings = get_settings() if args.root is None else get_settings().model_copy(update={"model_root": args.root})
    image = args.fetch or args.image or settings.avatar_image
    if args.fetch and fetch_image(args.fetch, Path(settings.model_root)) != 0:
        print(f"error: fetching the {args.fetch} image's checkpoints failed (above); the report follows", file=sys.stderr)
    try:
        report = examine(settings, image)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else render_text(report))
    return 0 if report.ok else 1


def _mcp(_args) -> int:
    from .mcp_server import main as serve

    serve()
    return 0


def _live(args) -> int:
    from .live.server import main as serve

    serve(args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m avatar_engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render a portrait + speech file to an MP4")
    r.add_argument("--face", required=True, help="portrait image file")
    r.add_argument("--audio", help="speech audio file")
    r.add_argument("--text", help="words to speak instead of --audio (embedded eSpeak NG voice)")
    r.add_argument("--voice", help="with --text: espeak:<voice> or piper:<name>")
    r.add_argument("--language", help="BCP-47 language of the speech or text (default en)")
    r.add_argument("--captions", choices=["srt", "vtt"], help="return captions in the result")
    r.add_argument("--reference-video", help="FOMM driving video file (head motion from a video)")
    r.add_argument("--out", required=True, help="output .mp4 path")
    r.add_argument("--engine", default="auto")
    r.add_argument("--mode", default="auto", choices=["auto", "real_time", "high_quality"])
    r.add_argument("--fps", type=int, default=25)
    r.add_argument("--size", type=int, default=512)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--still", action="store_true", help="no head motion")
    r.add_argument("--lipsync", default="auto", choices=["auto", "phonemes", "signal"])
    r.add_argument("--transcript", help="what is said, for phoneme alignment")
    r.add_argument("--on-no-face", default="error", choices=["error", "still"])
    r.add_argument("--qa", action="store_true", help="run the A/V sync self-check")
    r.set_defaults(func=_render)
    e = sub.add_parser("engines", help="list engines and the checkpoints found")
    e.set_defaults(func=_list_engines)
    b = sub.add_parser("batch", help="submit a JSONL/CSV manifest to the endpoint (resumable)")
    b.add_argument("manifest", help="rows of request inputs: .jsonl (one object a line) or .csv")
    b.add_argument("--out-dir", help="state, results.jsonl and videos/ (default: <manifest>.out/)")
    b.add_argument("--concurrency", type=int, default=4, help="jobs in flight at once")
    b.add_argument("--retries", type=int, default=2, help="resubmits after a retryable failure")
    b.add_argument("--timeout", type=float, default=900.0, help="seconds per job")
    b.add_argument("--download", action="store_true", help="also download URL results into videos/")
    b.add_argument("--retry-failed", action="store_true", help="submit rows that failed before again")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_batch)
    v = sub.add_parser("evaluate", help="run the scenario suite against a target: report.json + report.html")
    v.add_argument("--out", required=True, help="folder for report.json, report.html and videos/")
    v.add_argument("--target", default="local", help="local (in process), api:URL (the local API server) or "
                                                     "endpoint:ID (a deployed endpoint, needs RUNPOD_API_KEY)")
    v.add_argument("--suite", help="suite file (JSON/YAML, docs/EVALUATE.md); default: the shipped suite")
    v.add_argument("--quick", action="store_true", help="the quick subset (a few minutes on a CPU)")
    v.add_argument("--engines", nargs="+", default=["auto"], help="engines to request, each scenario runs with "
                                                                  "each (default auto)")
    v.add_argument("--baseline", help="an earlier report.json: exit 1 naming each regression beyond the tolerances")
    v.add_argument("--timeout", type=float, default=900.0, help="seconds per job on a remote target")
    v.set_defaults(func=_evaluate)
    d = sub.add_parser("models", help="model doctor: every checkpoint each engine would use and whether it loads")
    d.add_argument("--root", type=Path, help="model folder to examine (default MODEL_ROOT)")
    d.add_argument("--image", help="judge against what this image promises (default AVATAR_IMAGE)")
    d.add_argument("--json", action="store_true", help="machine-readable report")
    d.add_argument("--fetch", metavar="IMAGE", help="first download IMAGE's checkpoints (the image builder's code)")
    d.set_defaults(func=_models)
    m = sub.add_parser("mcp", help="serve the render_avatar MCP tool over stdio")
    m.set_defaults(func=_mcp)
    lv = sub.add_parser("live", help="serve live talking-head sessions over WebSocket (docs/LIVE.md)")
    lv.add_argument("--host", default="0.0.0.0", help="address to listen on")
    lv.add_argument("--port", type=int, help="port (default: PORT, else 8000)")
    lv.set_defaults(func=_live)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args.func(args)
