"""The request -> result boundary shared by the Runpod handler, the MCP tool and batch scripts.

Nothing escapes as an exception: every failure becomes `{"error": <JSON string>}` holding a stable
`code` and a human `message`. It is a string because the Runpod SDK keeps only the `error` key of a
failed job and its local API answers HTTP 500 when that value is not a string.
"""

from __future__ import annotations

import json
import logging
import os

from ..engines import ENGINES
from ..errors import AvatarError, redact_paths
from ..face.landmarks import get_face_mesh
from ..media.encode import pick_encoder
from ..pipeline import render, suspect_process_state
from ..runtime.checkpoints import report_bad_explicit_paths
from ..runtime.device import device_report, torch_loaded
from ..schema import parse_request
from ..settings import Settings, get_settings
from ..stages import warm_up_stages
from .actions import run_action

log = logging.getLogger("avatar_engine")


def error_result(exc: AvatarError) -> dict:
    """`{"error": "<JSON: code, message and, where a stage gave them, details>"}`; worker paths are cut to
    file names here, at the boundary (the log keeps them whole)."""
    body = exc.to_dict()
    body["message"] = redact_paths(body["message"])
    return {"error": json.dumps(body)}


def _redacted(result: dict) -> dict:
    """A result's fallback reasons (engine messages) without worker paths."""
    if "fallback_reason" in result:
        result["fallback_reason"] = redact_paths(result["fallback_reason"])
    for failure in result.get("fallback_from") or ():
        failure["message"] = redact_paths(failure["message"])
    return result


def _progress_reporter(job: dict):
    """Runpod progress updates on a real endpoint; a log line elsewhere (offline-safe)."""
    on_runpod = bool(os.environ.get("RUNPOD_WEBHOOK_GET_JOB")) and bool(job.get("id"))
    last = {"stage": None}

    def report(stage: str, fraction: float) -> None:
        if stage == last["stage"] and fraction not in (0.0, 1.0) and int(fraction * 100) % 25:
            return
        last["stage"] = stage
        message = f"{stage} {fraction:.0%}"
        if on_runpod:
            import runpod

            runpod.serverless.progress_update(job, message)
        else:
            log.info("job %s: %s", job.get("id", "-"), message)

    return report


def warm_up() -> None:
    """Load what every job needs once per process (face models, phone decoder, encoder probe),
    so the first job of a warm worker is as fast as the rest."""
    settings = get_settings()
    report_bad_explicit_paths(settings)  # once per process: a wrong *_CKPT is a deployment mistake
    get_face_mesh()
    if torch_loaded():  # a neural engine is loaded: probe CUDA now, so health answers in milliseconds
        device_report()
    pick_encoder(settings.video_encoder)
    warm_up_stages(settings, log)
    for engine in ENGINES.values():
        if engine.status(settings).available:
            try:
                engine.warm_up(settings)
            except Exception:  # noqa: BLE001 - a broken checkpoint is reported per job, not at boot
                log.exception("warming up engine %s failed", engine.name)
    try:
        from ..speech.phonemes import _allphone_decoder
        from ..speech.recognizer import phone_process

        _allphone_decoder()  # forced alignment (and recognition where the helper cannot run)
        phone_process().start()  # free recognition runs there, off this interpreter
    except Exception:  # noqa: BLE001 - phonemes are optional; the signal path always works
        log.warning("pocketsphinx unavailable; lip-sync will use the signal path", exc_info=True)


def run_job(job: dict, *, settings: Settings | None = None, deadline=None, emit=None, progress=None) -> dict:
    """Handle one job dict (`{"id", "input"}`) and return its output or error: Runpod jobs and MCP renders.

    `deadline` (serving.deadline.Deadline) bounds the whole job and carries its cancel token (a cancel raises
    serving.deadline.JobCancelled, not a result); `emit` streams live events (serving/handlers.py);
    `progress(stage, fraction)` replaces the Runpod progress updates (the MCP server's notifications)."""
    try:
        payload = job.get("input") if isinstance(job, dict) else None
        if isinstance(payload, dict) and "action" in payload:
            return run_action(payload, settings or get_settings())
        request = parse_request(payload, settings=settings)
        report = progress or _progress_reporter(job if isinstance(job, dict) else {})
        return _redacted(render(request, settings=settings, progress=report, deadline=deadline, emit=emit))
    except AvatarError as exc:
        log.info("job %s failed: %s: %s", job.get("id", "-") if isinstance(job, dict) else "-", exc.code, exc.message)
        return error_result(exc)
    except MemoryError:
        log.exception("out of memory")
        return {**error_result(AvatarError("internal", "the worker ran out of memory on this job")), "refresh_worker": True}
    except Exception as exc:  # noqa: BLE001 - the boundary: log the trace, never send it
        log.exception("unexpected failure")
        result = error_result(AvatarError("internal", f"internal error ({type(exc).__name__}); the job was not rendered"))
        if suspect_process_state(str(exc)):
            result["refresh_worker"] = True
        return result
