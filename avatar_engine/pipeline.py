"""One render, stage by stage: fetch -> decode -> animate -> encode -> deliver, timed and reported."""

from __future__ import annotations

import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import engines as engine_registry
from .audio.frames import frame_count
from .audio.io import decode_audio
from .delivery import (
    deliver_base64,
    deliver_path,
    deliver_url,
    get_store,
    inputs_digest,
    render_key,
    resolve_delivery,
)
from .engines import PreparedRender, RenderJob
from .errors import AvatarError
from .fetch import load_input
from .image_io import decode_image, fit_image
from .restore.stage import enhance_frames, gfpgan_checkpoint, load_restorer_model
from .schema import RenderRequest
from .settings import Settings, get_settings
from .streaming import prefetch
from .video_encode import Mp4Writer, pick_encoder

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass
class LocalInputs:
    """Bytes read from local files by the CLI: the only way local paths ever enter a render."""

    image: bytes
    audio: bytes


class _Timer:
    def __init__(self):
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = round(self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000, 1)

    def add(self, name: str, seconds: float) -> None:
        self.ms[name] = round(self.ms.get(name, 0.0) + seconds * 1000, 1)


def _quality_mode(request: RenderRequest) -> str:
    return "high_quality" if request.quality_mode == "high_quality" else "real_time"


def _wants_enhance(request: RenderRequest, mode: str, settings: Settings) -> bool:
    """`enhance` as asked; unasked, high-quality mode restores faces whenever GFPGAN is mounted."""
    if "enhance" in request.model_fields_set:
        return request.enhance
    return mode == "high_quality" and gfpgan_checkpoint(settings) is not None


def _encode(prepared: PreparedRender, job: RenderJob, out: Path, mode: str, encoder: str,
            timer: _Timer, progress: Progress | None) -> int:
    h, w = job.image.shape[:2]
    writer = Mp4Writer(out, width=w, height=h, fps=job.fps, audio=job.audio, mode=mode, encoder=encoder)
    step = max(1, job.n_frames // 20)
    frames = prefetch(prepared.frames)
    try:
        for i in range(job.n_frames):
            t0 = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                raise AvatarError("internal", f"engine stopped after {i} of {job.n_frames} frames") from None
            t1 = time.perf_counter()
            if t1 > job.deadline:
                raise AvatarError("timeout", f"the render took longer than the {job.settings.job_timeout_s:.0f} s job "
                                             f"limit (JOB_TIMEOUT_S) after {i} of {job.n_frames} frames")
            writer.write(frame)
            timer.add("render", t1 - t0)
            timer.add("encode", time.perf_counter() - t1)
            if progress and i % step == 0:
                progress("render", i / job.n_frames)
        t0 = time.perf_counter()
        writer.close()
        timer.add("encode", time.perf_counter() - t0)
    except BaseException:
        writer.abort()
        out.unlink(missing_ok=True)
        raise
    finally:
        frames.close()
    return writer.frames_written


def suspect_process_state(message: str) -> bool:
    """Errors after which this process should not take more jobs (a poisoned CUDA context)."""
    return "CUDA error" in message or "CUBLAS_STATUS" in message or "cuDNN error" in message


# failures of the input or of the clock, not of the engine: another engine would fail the same way
_NO_FALLBACK_CODES = ("no_face", "invalid_input", "unsupported_media", "input_too_large", "timeout")
_TIMING_KEYS = ("fetch", "decode", "prepare", "render", "encode", "qa", "deliver", "total")


@dataclass
class _Rendered:
    engine: object
    frames: int
    info: dict
    failures: list
    suspect: bool = False  # an engine failed in a way that poisons the process (CUDA)


def _render_with_fallback(chain, job: RenderJob, mp4: Path, mode: str, encoder: str, timer: _Timer,
                          progress: Progress | None, restorer=None) -> _Rendered:
    """Try engines best-first; input problems end the job, engine faults fall through to the next."""
    failures, suspect = [], False
    for engine in chain:
        try:
            with timer.stage("prepare"):
                prepared = engine.prepare(job)
            if restorer is not None:
                prepared = PreparedRender(enhance_frames(prepared.frames, restorer, job.request.enhance_weight,
                                                         cpu_bf16=job.settings.cpu_bf16),
                                          {**prepared.info, "enhanced": True})
            frames = _encode(prepared, job, mp4, mode, encoder, timer, progress)
            return _Rendered(engine, frames, prepared.info, failures, suspect)
        except AvatarError as exc:
            if exc.code == "no_face" and job.request.on_no_face == "still":
                still = engine_registry.ENGINES["still"]
                frames = _encode(still.prepare(job), job, mp4, mode, encoder, timer, progress)
                return _Rendered(still, frames, {"no_face": True}, failures, suspect)
            if exc.code in _NO_FALLBACK_CODES or engine is chain[-1]:
                raise
            failures.append({"engine": engine.name, "code": exc.code, "message": exc.message})
        except Exception as exc:  # a broken engine must not sink the job while a fallback exists
            log.exception("engine %s failed", engine.name)
            if engine is chain[-1]:
                raise
            suspect = suspect or suspect_process_state(str(exc))
            # the exception text stays in the log: callers see its type only
            failures.append({"engine": engine.name, "code": "internal", "message": type(exc).__name__})
    raise AssertionError("unreachable: the last engine either returns or raises")


def render(request: RenderRequest, *, settings: Settings | None = None, local: LocalInputs | None = None,
           progress: Progress | None = None, out_path: str | None = None) -> dict:
    """Run one request to a delivered MP4 and return the result dict (raises AvatarError)."""
    settings = settings or get_settings()
    timer = _Timer()
    started = time.perf_counter()
    report = progress or (lambda stage, frac: None)
    store = get_store(settings) if request.output.delivery in ("auto", "url") and not out_path else None
    delivery = "path" if out_path else resolve_delivery(request.output.delivery, settings, has_store=store is not None)

    def finish(result: dict) -> dict:
        timer.ms["total"] = round((time.perf_counter() - started) * 1000, 1)
        result["timings_ms"] = {k: timer.ms[k] for k in _TIMING_KEYS if k in timer.ms}
        report("done", 1.0)
        return result

    report("fetch", 0.0)
    with timer.stage("fetch"):
        if local is not None:
            image_bytes, audio_bytes = local.image, local.audio
        else:
            image_bytes = load_input(request.image_url, request.image_b64, kind="image", settings=settings).data
            audio_bytes = load_input(request.audio_url, request.audio_b64, kind="audio", settings=settings).data

    report("decode", 0.0)
    with timer.stage("decode"):
        source = decode_image(image_bytes, max_pixels=settings.max_image_pixels)
        image = fit_image(source, request.size)
        source_scale = max(source.shape[:2]) / max(image.shape[:2])
        del source
        audio = decode_audio(audio_bytes, max_seconds=settings.max_audio_seconds,
                             min_seconds=settings.min_audio_seconds)
        del image_bytes, audio_bytes

    job = RenderJob(request=request, image=image, audio=audio, fps=request.fps,
                    n_frames=frame_count(audio.duration_s, request.fps), settings=settings, source_scale=source_scale,
                    deadline=started + settings.job_timeout_s)
    mode = _quality_mode(request)
    chain = engine_registry.candidates(request.engine, settings)
    h, w = image.shape[:2]
    summary = {"quality_mode": mode, "width": w, "height": h, "fps": request.fps, "frames": job.n_frames,
               "duration_s": round(audio.duration_s, 3)}

    inputs = inputs_digest(image, audio.samples, audio.rate, request.options_digest()) if delivery == "url" else ""

    def key_for(engine) -> str:
        return render_key(inputs, engine.name, engine.version)

    if delivery == "url" and request.cache:
        with timer.stage("deliver"):
            key = key_for(chain[0])
            cached = deliver_url(store, None, key, {}) if store.exists(key) else None
        if cached:
            return finish({**cached, "cached": True, "engine": chain[0].name, "encoder": None, **summary})

    encoder = pick_encoder(settings.video_encoder)
    restorer = None
    if _wants_enhance(request, mode, settings):
        with timer.stage("prepare"):
            restorer = load_restorer_model(settings)  # before rendering: a missing checkpoint fails fast
    with tempfile.TemporaryDirectory(prefix="avatar-job-", dir=settings.work_dir) as tmp:
        mp4 = Path(tmp) / "render.mp4"
        report("render", 0.0)
        done = _render_with_fallback(chain, job, mp4, mode, encoder, timer, progress, restorer)
        info = dict(done.info)
        if request.qa:
            report("qa", 0.0)
            from .quality import sync_check

            with timer.stage("qa"):
                info["sync"] = sync_check(mp4, audio.analysis).to_dict()

        report("deliver", 0.0)
        with timer.stage("deliver"):
            if delivery == "path":
                delivered = deliver_path(mp4, settings, name=request.output.name, exact=out_path)
            elif delivery == "url":
                meta = {"engine": done.engine.name, "engine_version": done.engine.version,
                        "frames": str(done.frames), "options": request.options_digest()[:16]}
                delivered = {**deliver_url(store, mp4, key_for(done.engine), meta), "cached": False}
            else:
                delivered = deliver_base64(mp4, settings)

    result = {**delivered, "engine": done.engine.name, "encoder": encoder, **summary, "frames": done.frames, **info}
    if done.failures:
        result["fallback_from"] = done.failures
    if done.suspect:
        result["refresh_worker"] = True  # the SDK recycles the worker after this job
    return finish(result)
