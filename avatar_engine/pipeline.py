"""One render as numbered steps: fetch -> decode -> prepare -> render+encode -> qa -> deliver, timed and reported."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import engines as engine_registry
from .audio.frames import frame_count
from .audio.io import decode_audio
from .engines import Plan, PreparedRender, RenderJob
from .errors import AvatarError
from .media.delivery import (
    deliver_base64,
    deliver_path,
    deliver_url,
    get_store,
    inputs_digest,
    load_result_card,
    render_key,
    resolve_delivery,
    save_result_card,
)
from .media.encode import Mp4Writer, pick_encoder
from .media.fetch import load_input
from .media.hls import InlineLive, LiveOutput, keyframe_interval, make_live, stream_cached
from .media.image import decode_image, fit_image
from .media.prefetch import prefetch
from .schema import RenderRequest
from .serving.deadline import Deadline
from .settings import Settings, get_settings
from .speech.tts import speak_request
from .stages.captions import caption_result, caption_stage, ensure_words
from .stages.restore.stage import enhance_frames, load_restorer_model
from .stages.restore.stage import lookup as restore_lookup

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


@dataclass
class LocalInputs:
    """Bytes read from local files by the CLI: the only way local paths ever enter a render."""

    image: bytes
    audio: bytes | None  # None with `text`: the voice makes the audio
    reference_video: bytes | None = None


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


def _encode(prepared: PreparedRender, job: RenderJob, out: Path, mode: str, encoder: str,
            timer: _Timer, progress: Progress | None, live: LiveOutput | None = None) -> int:
    h, w = job.image.shape[:2]
    tee = live.tee(out.parent, job.audio, job.fps) if live is not None else None
    writer = Mp4Writer(out, width=w, height=h, fps=job.fps, audio=job.audio, mode=mode, encoder=encoder,
                       tee=tee, keyframe_every=keyframe_interval(job.fps) if tee is not None else None)
    step = max(1, job.n_frames // 20)
    frames = prefetch(prepared.frames, check=lambda: job.deadline.check(f"render, after {writer.frames_written} "
                                                                         f"of {job.n_frames} frames"))
    try:
        for i in range(job.n_frames):
            t0 = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                raise AvatarError("internal", f"engine stopped after {i} of {job.n_frames} frames") from None
            t1 = time.perf_counter()
            job.deadline.check(f"render, after {i} of {job.n_frames} frames")  # timeout, or a cancel
            writer.write(frame)
            timer.add("render", t1 - t0)
            timer.add("encode", time.perf_counter() - t1)
            if progress and i % step == 0:
                progress("render", i / job.n_frames)
        t0 = time.perf_counter()
        writer.close()
        timer.add("encode", time.perf_counter() - t0)
    except BaseException:
        if tee is not None:
            tee.abort()
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
_TIMING_KEYS = ("fetch", "decode", "prepare", "render", "encode", "qa", "deliver", "first_segment", "total")


@dataclass
class _Rendered:
    plan: Plan
    frames: int
    info: dict
    failures: list
    suspect: bool = False  # an engine failed in a way that poisons the process (CUDA)
    mode: str = "real_time"  # the quality mode the plan that rendered ran in (encoder preset, restoration)

    @property
    def engine(self):
        return self.plan.engine

    def chain(self) -> list[str]:
        stages = list(self.plan.stages)
        if self.info.get("enhanced") and "gfpgan" not in stages:
            stages.append("gfpgan")
        if not self.info.get("enhanced") and "gfpgan" in stages:
            stages.remove("gfpgan")
        return stages


def _is_cuda_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def _free_cuda_cache() -> None:
    torch = sys.modules.get("torch")  # only a neural engine can run out of GPU memory: torch is loaded
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _job_for(plan: Plan, job: RenderJob) -> RenderJob:
    """The job with the request options the plan implies (e.g. SadTalker's lip_refine in real-time mode)."""
    updates = {}
    for name, value in plan.options.items():
        current = getattr(job.request, name, None)
        if isinstance(value, dict) and hasattr(current, "model_copy"):
            updates[name] = current.model_copy(update=value)
        elif not isinstance(value, dict):
            updates[name] = value
    return dataclasses.replace(job, request=job.request.model_copy(update=updates)) if updates else job


def _render_with_fallback(plans: list[Plan], job: RenderJob, mp4: Path, encoder: str, timer: _Timer,
                          progress: Progress | None, restorer_for: Callable[[Plan], object],
                          live: LiveOutput | None = None) -> _Rendered:
    """Try plans best-first; input problems end the job, engine faults fall through to the next plan.

    A CUDA out-of-memory retries the same plan with half the batch, down to one frame, then steps down
    to the next plan (the next quality mode).
    """
    failures, suspect = [], False
    for plan in plans:
        engine, plan_job = plan.engine, _job_for(plan, job)
        mode = "high_quality" if plan.restore or job.request.quality_mode == "high_quality" else "real_time"
        last = plan is plans[-1]
        while True:
            info: dict = {}
            try:
                with timer.stage("prepare"):
                    restorer = restorer_for(plan)
                    # bounded: a stuck face or speech analysis cannot outlive the job
                    prepared = job.deadline.call(lambda: engine.prepare(plan_job),
                                                 stage=f"prepare ({engine.name}), after 0 of {job.n_frames} frames")
                info = prepared.info
                if restorer is not None:
                    prepared = PreparedRender(enhance_frames(prepared.frames, restorer, job.request.enhance_weight,
                                                             cpu_bf16=job.settings.cpu_bf16),
                                              {**prepared.info, "enhanced": True})
                if job.request.captions_burn:  # after restoration: GFPGAN must not repaint the text
                    burned = caption_stage(prepared.frames, job.request, job.audio, job.fps)
                    prepared = PreparedRender(burned, prepared.info)
                frames = _encode(prepared, plan_job, mp4, mode, encoder, timer, progress, live)
                if plan_job.batch_limit:
                    prepared.info["oom_batch_limit"] = plan_job.batch_limit
                return _Rendered(plan, frames, prepared.info, failures, suspect, mode)
            except AvatarError as exc:
                if exc.code == "no_face" and job.request.on_no_face == "still":
                    still = engine_registry.ENGINES["still"]
                    frames = _encode(still.prepare(job), job, mp4, mode, encoder, timer, progress, live)
                    return _Rendered(Plan(still, ("still",)), frames, {"no_face": True}, failures, suspect, mode)
                if exc.code in _NO_FALLBACK_CODES or last:
                    raise
                failures.append({"engine": engine.name, "code": exc.code, "message": exc.message})
                break
            except Exception as exc:  # a broken engine must not sink the job while a fallback exists
                if _is_cuda_oom(exc):
                    _free_cuda_cache()
                    batch = plan_job.batch_limit or int(info.get("batch_size") or 16)
                    if batch > 1:
                        log.warning("engine %s ran out of GPU memory at batch %d; retrying with %d",
                                    engine.name, batch, batch // 2)
                        plan_job = dataclasses.replace(plan_job, batch_limit=batch // 2)
                        continue
                log.exception("engine %s failed", engine.name)
                if last:
                    raise
                suspect = suspect or suspect_process_state(str(exc))
                # the exception text stays in the log: callers see its type only
                failures.append({"engine": engine.name, "code": "out_of_memory" if _is_cuda_oom(exc) else "internal",
                                 "message": type(exc).__name__})
                break
    raise AssertionError("unreachable: the last plan either returns or raises")


@dataclass
class _Inputs:
    image: bytes
    audio: bytes | None  # None for text input: the voice makes the audio in step 2
    video: bytes | None = None  # a FOMM driving video


def _fetch(request: RenderRequest, settings: Settings, local: LocalInputs | None) -> _Inputs:
    if local is not None:
        return _Inputs(local.image, None if request.text is not None else local.audio, local.reference_video)
    if request.avatar_id:
        from .media.avatars import load_avatar_image

        image = load_avatar_image(request.avatar_id, settings)
    else:
        image = load_input(request.image_url, request.image_b64, kind="image", settings=settings).data
    audio = None if request.text is not None else load_input(
        request.audio_url, request.audio_b64, kind="audio", settings=settings).data
    video = None
    if request.reference_video_url or request.reference_video_b64:
        video = load_input(request.reference_video_url, request.reference_video_b64, kind="video",
                           settings=settings).data
    return _Inputs(image, audio, video)


def _decode(request: RenderRequest, settings: Settings, inputs: _Inputs, deadline: Deadline) -> RenderJob:
    source = decode_image(inputs.image, max_pixels=settings.max_image_pixels)
    image = fit_image(source, request.size)
    source_scale = max(source.shape[:2]) / max(image.shape[:2])
    del source
    if inputs.audio is None:  # text input: spoken by a voice that also reports its timeline
        audio = speak_request(request, settings)
    else:
        audio = decode_audio(inputs.audio, max_seconds=settings.max_audio_seconds,
                             min_seconds=settings.min_audio_seconds)
    ensure_words(request, audio)  # captions: word times (aligns a transcript when needed)
    if inputs.video is not None:  # a driving video's metadata is checked before any engine work
        from .engines.fomm.driving import DrivingLimits, check_driving_video

        check_driving_video(inputs.video, DrivingLimits.from_settings(settings))
    return RenderJob(request=request, image=image, audio=audio, fps=request.fps,
                     n_frames=frame_count(audio.duration_s, request.fps), settings=settings,
                     source_scale=source_scale, deadline=deadline, reference_video=inputs.video)


def _restorer(request: RenderRequest, mode: str, settings: Settings, warnings: list[str]):
    """The GFPGAN model when restoration applies. Asked for (`enhance: true`): a missing checkpoint fails the
    job before rendering. Only preferred (high-quality mode): without a usable checkpoint the job renders
    unrestored and says so in `warnings`."""
    if "enhance" in request.model_fields_set:
        return load_restorer_model(settings) if request.enhance else None
    if mode != "high_quality":
        return None
    found = restore_lookup(settings)
    if not found.found:
        if found.explicit:  # a bad GFPGAN_CKPT is a deployment mistake worth telling the caller
            warnings.append(f"face restoration skipped: {found.missing_reason('GFPGAN checkpoint')}")
        return None
    try:
        return load_restorer_model(settings)
    except AvatarError as exc:
        warnings.append(f"face restoration skipped: {exc.message}")
        return None


def render(request: RenderRequest, *, settings: Settings | None = None, local: LocalInputs | None = None,
           progress: Progress | None = None, out_path: str | None = None, deadline: Deadline | None = None,
           emit: Callable[[dict], None] | None = None) -> dict:
    """Run one request to a delivered MP4 and return the result dict (raises AvatarError; a cancelled
    `deadline` raises JobCancelled). Every step stops at `deadline` (JOB_TIMEOUT_S from the job's start).
    With `emit`, the video also streams while it renders (media/hls.py): events go to `emit`."""
    settings = settings or get_settings()
    if "quality_mode" not in request.model_fields_set and settings.default_quality_mode != "auto":
        request = request.model_copy(update={"quality_mode": settings.default_quality_mode})
    timer = _Timer()
    deadline = deadline or Deadline(settings.job_timeout_s)
    started = deadline.start
    report = progress or (lambda stage, frac: None)
    store = get_store(settings) if request.output.delivery in ("auto", "url") and not out_path else None
    delivery = "path" if out_path else resolve_delivery(request.output.delivery, settings, has_store=store is not None)
    warnings: list[str] = []

    def finish(result: dict) -> dict:
        if warnings:
            result["warnings"] = warnings
        timer.ms["total"] = round((time.perf_counter() - started) * 1000, 1)
        result["timings_ms"] = {k: timer.ms[k] for k in _TIMING_KEYS if k in timer.ms}
        report("done", 1.0)
        return result

    # 1. fetch: URLs / base64 / a named avatar (local files only from the CLI)
    report("fetch", 0.0)
    with timer.stage("fetch"):
        inputs = deadline.call(lambda: _fetch(request, settings, local), stage="fetch")

    # 2. decode: the portrait at output size, the speech at the analysis rate (or spoken from text)
    report("decode", 0.0)
    with timer.stage("decode"):
        job = deadline.call(lambda: _decode(request, settings, inputs, deadline), stage="decode")
        inputs = None  # the encoded bytes are not needed past decoding
    mode = _quality_mode(request)
    selection = engine_registry.select_chain(request.engine, request.quality_mode, settings,
                                             reference_video=job.reference_video is not None)
    warnings.extend(selection.warnings)
    chain = [plan.engine for plan in selection.plans]
    h, w = job.image.shape[:2]
    summary = {"quality_mode": mode, "width": w, "height": h, "fps": request.fps, "frames": job.n_frames,
               "duration_s": round(job.audio.duration_s, 3)}

    # 3. prepare: the bucket cache (a hit ends the job), the encoder, the optional restoration stage
    # text input: the options (text, voice, language) define the audio; eSpeak's samples vary by a few per call
    audio_identity = job.audio.samples if request.text is None else np.zeros(0, np.float32)
    options = request.options_digest()
    if job.reference_video is not None:  # the driving video by content, like the portrait and the speech
        options += hashlib.sha256(job.reference_video).hexdigest()
    digest = inputs_digest(job.image, audio_identity, job.audio.rate, options) if delivery == "url" else ""

    def key_for(engine) -> str:
        return render_key(digest, engine.name, engine.version)

    if delivery == "url" and request.cache:
        with timer.stage("deliver"):
            key = key_for(chain[0])
            cached = deadline.call(lambda: deliver_url(store, None, key, {}) if store.exists(key) else None,
                                   stage="deliver")
        if cached:
            if emit is not None:  # a streaming deployment streams the cached video like a fresh render
                stream_cached(emit, store, key, job.audio, work_dir=settings.work_dir, deadline=deadline)
            return finish({"engine": chain[0].name, "encoder": None, **summary, **load_result_card(store, key),
                           **cached, **caption_result(request, job.audio, store, key), "cached": True})
    encoder = pick_encoder(settings.video_encoder)
    with timer.stage("prepare"):
        restorer = _restorer(request, mode, settings, warnings)  # before rendering: fails fast

    def restorer_for(plan: Plan):
        """GFPGAN is part of the high-quality chain unless the request set `enhance` itself."""
        if restorer is not None or not plan.restore or "enhance" in request.model_fields_set:
            return restorer
        try:
            return load_restorer_model(settings)
        except AvatarError as exc:  # an optional stage failing is reported, never silently dropped
            warnings.append(f"face restoration skipped: {exc.message}")
            return None

    live = make_live(emit, store if delivery == "url" else None) if emit is not None else None
    with tempfile.TemporaryDirectory(prefix="avatar-job-", dir=settings.work_dir) as tmp:
        mp4 = Path(tmp) / "render.mp4"
        try:
            # 4. render + encode, falling back along the engine chain (and streaming, with `emit`)
            report("render", 0.0)
            if live is not None:
                live.start(store=store, name_stem=key_for(chain[0])[:-4] if digest else "live", deadline=deadline)
            done = _render_with_fallback(selection.plans, job, mp4, encoder, timer, progress, restorer_for, live)
            if live is not None:
                live.finish()
            info = dict(done.info)
            # an engine's own warnings (e.g. Diff2Lip on a CPU) join the job's, never replace them
            warnings.extend(w for w in info.pop("warnings", ()) if w not in warnings)

            # 5. qa: the A/V sync self-check on the encoded file
            if request.qa:
                report("qa", 0.0)
                from .media.sync_check import sync_check

                with timer.stage("qa"):
                    info["sync"] = deadline.call(lambda: sync_check(mp4, job.audio.analysis).to_dict(), stage="qa")

            # 6. deliver: bucket URL, local path or inline base64 (captions beside it)
            report("deliver", 0.0)
            with timer.stage("deliver"):
                delivered = live.delivered() if isinstance(live, InlineLive) and delivery == "base64" else \
                    _deliver(mp4, delivery, request, settings, store, key_for(done.engine), done, out_path, deadline)
                delivered.update(deadline.call(lambda: caption_result(
                    request, job.audio, store if delivery == "url" else None,
                    key_for(done.engine) if delivery == "url" else None), stage="deliver"))
        except BaseException:
            if live is not None:
                live.discard()
            raise
        if live is not None and live.first_segment_at is not None:
            timer.ms["first_segment"] = round((live.first_segment_at - started) * 1000, 1)

    result = {**delivered, "engine": done.engine.name, "chain": done.chain(), "encoder": encoder, **summary,
              "quality_mode": done.mode, "frames": done.frames, **info}
    reasons = [selection.reason] if selection.reason else []
    reasons += [f"{f['engine']} failed ({f['code']}: {f['message']})" for f in done.failures]
    if reasons:
        result["fallback_reason"] = "; ".join(reasons)
    if done.failures:
        result["fallback_from"] = done.failures
    if done.suspect:
        result["refresh_worker"] = True  # the SDK recycles the worker after this job
    if delivery == "url":  # a later cache hit answers with these fields too
        save_result_card(store, key_for(done.engine), result, deadline=deadline)
    return finish(result)


def _deliver(mp4: Path, delivery: str, request: RenderRequest, settings: Settings, store, key: str,
             done: _Rendered, out_path: str | None, deadline: Deadline) -> dict:
    if delivery == "path":
        return deliver_path(mp4, settings, name=request.output.name, exact=out_path)
    if delivery == "url":
        meta = {"engine": done.engine.name, "engine_version": done.engine.version,
                "frames": str(done.frames), "options": request.options_digest()[:16]}
        return {**deliver_url(store, mp4, key, meta, deadline=deadline), "cached": False}
    return deliver_base64(mp4, settings)
