"""One render as numbered steps: fetch -> decode -> prepare -> render+encode -> qa -> deliver, timed and reported."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import engines as engine_registry
from .audio.frames import frame_count
from .audio.io import decode_audio
from .engines import Plan, PreparedRender, RenderJob, Selection
from .errors import AvatarError
from .media.delivery import (
    deliver_base64,
    deliver_captions,
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
from .runtime.device import empty_gpu_cache
from .runtime.inventory import models_used
from .schema import RenderRequest
from .serving.deadline import Deadline
from .settings import Settings, get_settings
from .speech.captions import ensure_words
from .speech.tts import speak_request
from .stages import FrameStage, OpenStages, open_stages

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


_TIMING_KEYS = ("fetch", "decode", "prepare", "render", "encode", "qa", "deliver", "first_segment", "total")


@dataclass
class _Run:
    """One render's context: the request, its clock and timings, its warnings and where the video goes."""

    request: RenderRequest
    settings: Settings
    deadline: Deadline
    progress: Progress | None  # the caller's; the frame loop reports to it
    out_path: str | None
    store: object | None
    delivery: str  # "url", "path" or "base64"
    timer: _Timer = field(default_factory=_Timer)
    warnings: list[str] = field(default_factory=list)
    digest: str = ""  # the inputs' content address (bucket delivery only)

    def report(self, stage: str, fraction: float) -> None:
        if self.progress is not None:
            self.progress(stage, fraction)

    def step(self, name: str, fn: Callable, *, announce: bool = True):
        """`fn()` as the timed step `name`, stopped at the job's deadline."""
        if announce:
            self.report(name, 0.0)
        with self.timer.stage(name):
            return self.deadline.call(fn, stage=name)

    def key_for(self, engine) -> str:
        return render_key(self.digest, engine.name, engine.version)

    @property
    def bucket(self):
        """The store when the video goes to a bucket (captions and live segments go beside it)."""
        return self.store if self.delivery == "url" else None

    def finish(self, result: dict) -> dict:
        if self.warnings:
            result["warnings"] = self.warnings
        self.timer.ms["total"] = round((time.perf_counter() - self.deadline.start) * 1000, 1)
        result["timings_ms"] = {k: self.timer.ms[k] for k in _TIMING_KEYS if k in self.timer.ms}
        self.report("done", 1.0)
        return result


def _start(request: RenderRequest, settings: Settings, progress: Progress | None, out_path: str | None,
           deadline: Deadline | None) -> _Run:
    store = get_store(settings) if request.output.delivery in ("auto", "url") and not out_path else None
    delivery = "path" if out_path else resolve_delivery(request.output.delivery, settings, has_store=store is not None)
    return _Run(request, settings, deadline or Deadline(settings.job_timeout_s), progress, out_path, store, delivery)


def render(request: RenderRequest, *, settings: Settings | None = None, local: LocalInputs | None = None,
           progress: Progress | None = None, out_path: str | None = None, deadline: Deadline | None = None,
           emit: Callable[[dict], None] | None = None) -> dict:
    """Run one request to a delivered MP4 and return the result dict (raises AvatarError; a cancelled
    `deadline` raises JobCancelled). Every step stops at `deadline` (JOB_TIMEOUT_S from the job's start).
    With `emit`, the video also streams while it renders (media/hls.py): events go to `emit`.
    The request's quality mode is final (schema.parse_request applied DEFAULT_QUALITY_MODE)."""
    run = _start(request, settings or get_settings(), progress, out_path, deadline)
    job = _fetch_and_decode(run, local)  # 1. fetch, 2. decode
    selection = engine_registry.select_chain(request.engine, request.quality_mode, run.settings,
                                             reference_video=job.reference_video is not None)
    run.warnings.extend(selection.warnings)
    cached = _cached(run, job, selection, emit)  # 3. prepare: a bucket cache hit ends the job
    if cached is not None:
        return run.finish(cached)
    encoder = pick_encoder(run.settings.video_encoder)
    with run.timer.stage("prepare"):
        stages = open_stages(job, selection.plans, run.warnings)  # before rendering: fails fast
    done, info, delivered = _produce(run, job, selection, stages, encoder, emit)  # 4. render, 5. qa, 6. deliver
    result = _result(run, job, selection, done, info, delivered, encoder)
    if run.delivery == "url":  # a later cache hit answers with these fields too
        save_result_card(run.store, run.key_for(done.engine), result, deadline=run.deadline)
    return run.finish(result)


# --- 1. fetch, 2. decode ----------------------------------------------------------------------


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
    # captions: word times (aligns a transcript when needed, in short pieces that stop at the deadline)
    ensure_words(request, audio, lambda: deadline.check("captions alignment"))
    if inputs.video is not None:  # a driving video's metadata is checked before any engine work
        from .engines.fomm.driving import DrivingLimits, check_driving_video

        check_driving_video(inputs.video, DrivingLimits.from_settings(settings))
    return RenderJob(request=request, image=image, audio=audio, fps=request.fps,
                     n_frames=frame_count(audio.duration_s, request.fps), settings=settings,
                     source_scale=source_scale, deadline=deadline, reference_video=inputs.video)


def _fetch_and_decode(run: _Run, local: LocalInputs | None) -> RenderJob:
    """URLs / base64 / a named avatar (local files only from the CLI), then the portrait at output size and
    the speech at the analysis rate (or spoken from text); the encoded bytes are dropped on return."""
    inputs = run.step("fetch", lambda: _fetch(run.request, run.settings, local))
    return run.step("decode", lambda: _decode(run.request, run.settings, inputs, run.deadline))


# --- 3. prepare: the bucket cache -------------------------------------------------------------------


def _summary(request: RenderRequest, job: RenderJob, mode: str) -> dict:
    h, w = job.image.shape[:2]
    return {"quality_mode": mode, "width": w, "height": h, "fps": request.fps, "frames": job.n_frames,
            "duration_s": round(job.audio.duration_s, 3)}


def _cached(run: _Run, job: RenderJob, selection: Selection, emit: Callable[[dict], None] | None) -> dict | None:
    """Sets the inputs' content address (bucket delivery); the result of an earlier identical render, if any
    (a streaming deployment streams the cached video like a fresh render)."""
    request = run.request
    if run.delivery != "url":
        return None
    # text input: the options (text, voice, language) define the audio; eSpeak's samples vary by a few per call
    audio_identity = job.audio.samples if request.text is None else np.zeros(0, np.float32)
    options = request.options_digest()
    if job.reference_video is not None:  # the driving video by content, like the portrait and the speech
        options += hashlib.sha256(job.reference_video).hexdigest()
    run.digest = inputs_digest(job.image, audio_identity, job.audio.rate, options)
    if not request.cache:
        return None
    first = selection.plans[0]
    key = run.key_for(first.engine)
    store = run.store
    cached = run.step("deliver", lambda: deliver_url(store, None, key, {}) if store.exists(key) else None,
                      announce=False)
    if not cached:
        return None
    if emit is not None:
        stream_cached(emit, store, key, job.audio, work_dir=run.settings.work_dir, deadline=run.deadline)
    summary = _summary(request, job, first.run_mode(request.quality_mode))
    return {"engine": first.engine.name, "encoder": None, **summary, **load_result_card(store, key), **cached,
            **deliver_captions(request, job.audio, store, key), "cached": True}


# --- 4. render + encode, falling back along the engine chain ----------------------------------------


def suspect_process_state(message: str) -> bool:
    """Errors after which this process should not take more jobs (a poisoned CUDA context)."""
    return "CUDA error" in message or "CUBLAS_STATUS" in message or "cuDNN error" in message


# failures of the input or of the clock, not of the engine: another engine would fail the same way
_NO_FALLBACK_CODES = ("no_face", "invalid_input", "unsupported_media", "input_too_large", "timeout")


@dataclass
class _Rendered:
    plan: Plan
    frames: int
    info: dict
    failures: list
    suspect: bool = False  # an engine failed in a way that poisons the process (CUDA)
    mode: str = "real_time"  # the quality mode the plan that rendered ran in (encoder preset, restoration)
    ran: tuple[FrameStage, ...] = ()  # the frame stages that ran over the engine's frames

    @property
    def engine(self):
        return self.plan.engine

    def chain(self) -> list[str]:
        return list(self.plan.chain) + [stage.name for stage in self.ran if stage.in_chain]

    def models(self) -> list[dict]:
        """The chain's models and a lip stage an engine chose itself, each with its license (MODEL_LICENSES)."""
        chosen = [self.info.get(k) for k in ("lip_refine", "lip_stage") if isinstance(self.info.get(k), str)]
        return models_used(self.chain() + chosen)


def _encode(run: _Run, prepared: PreparedRender, job: RenderJob, out: Path, mode: str, encoder: str,
            live: LiveOutput | None = None) -> int:
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
            run.timer.add("render", t1 - t0)
            run.timer.add("encode", time.perf_counter() - t1)
            if run.progress and i % step == 0:
                run.progress("render", i / job.n_frames)
        t0 = time.perf_counter()
        writer.close()
        run.timer.add("encode", time.perf_counter() - t0)
    except BaseException:
        if tee is not None:
            tee.abort()
        writer.abort()
        out.unlink(missing_ok=True)
        raise
    finally:
        frames.close()
    return writer.frames_written


def _is_cuda_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


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


def _halved(plan_job: RenderJob, engine_name: str, info: dict, exc: Exception) -> RenderJob | None:
    """After a CUDA out-of-memory: the job with half the batch, or None once the batch was one frame."""
    if not _is_cuda_oom(exc):
        return None
    empty_gpu_cache()
    batch = plan_job.batch_limit or int(info.get("batch_size") or 16)
    if batch <= 1:
        return None
    log.warning("engine %s ran out of GPU memory at batch %d; retrying with %d", engine_name, batch, batch // 2)
    return dataclasses.replace(plan_job, batch_limit=batch // 2)


@dataclass
class _Target:
    """Where one render attempt writes: the MP4, the encoder, the live stream and the job's frame stages."""

    mp4: Path
    encoder: str
    stages: OpenStages
    live: LiveOutput | None


def _render_plan(run: _Run, plan: Plan, plan_job: RenderJob, target: _Target, seen: dict) -> _Rendered:
    """One plan, start to end: the engine's frames, the frame stages over them, encoded. `seen` gets the
    engine's info as soon as it exists (the out-of-memory retry reads its batch size)."""
    engine = plan.engine
    with run.timer.stage("prepare"):
        # bounded: a stuck face or speech analysis cannot outlive the job
        prepared = plan_job.deadline.call(lambda: engine.prepare(plan_job),
                                          stage=f"prepare ({engine.name}), after 0 of {plan_job.n_frames} frames")
    seen.update(prepared.info)
    prepared, ran = target.stages.apply(prepared, plan, plan_job)
    mode = plan.run_mode(run.request.quality_mode)
    frames = _encode(run, prepared, plan_job, target.mp4, mode, target.encoder, target.live)
    if plan_job.batch_limit:
        prepared.info["oom_batch_limit"] = plan_job.batch_limit
    return _Rendered(plan, frames, prepared.info, [], mode=mode, ran=ran)


def _render_still(run: _Run, job: RenderJob, target: _Target, mode: str) -> _Rendered:
    """`on_no_face: still`: the portrait held over the audio when no engine finds a face."""
    still = engine_registry.ENGINES["still"]
    frames = _encode(run, still.prepare(job), job, target.mp4, mode, target.encoder, target.live)
    return _Rendered(Plan(still, ("still",)), frames, {"no_face": True}, [], mode=mode)


def _failure(engine_name: str, exc: BaseException) -> dict:
    code = exc.code if isinstance(exc, AvatarError) else "out_of_memory" if _is_cuda_oom(exc) else "internal"
    # an unexpected exception's text stays in the log: callers see its type only
    message = exc.message if isinstance(exc, AvatarError) else type(exc).__name__
    return {"engine": engine_name, "code": code, "message": message}


def _render_with_fallback(run: _Run, plans: list[Plan], job: RenderJob, target: _Target) -> _Rendered:
    """Try plans best-first; input problems end the job, engine faults fall through to the next plan.

    A CUDA out-of-memory retries the same plan with half the batch, down to one frame, then steps down
    to the next plan (the next quality mode).
    """
    failures, suspect = [], False
    for plan in plans:
        plan_job, last = _job_for(plan, job), plan is plans[-1]
        while True:
            seen: dict = {}
            try:
                done = _render_plan(run, plan, plan_job, target, seen)
            except AvatarError as exc:
                if exc.code == "no_face" and job.request.on_no_face == "still":
                    done = _render_still(run, job, target, plan.run_mode(job.request.quality_mode))
                elif exc.code in _NO_FALLBACK_CODES or last:
                    raise
                else:
                    failures.append(_failure(plan.engine.name, exc))
                    break
            except Exception as exc:  # a broken engine must not sink the job while a fallback exists
                retry = _halved(plan_job, plan.engine.name, seen, exc)
                if retry is not None:
                    plan_job = retry
                    continue
                log.exception("engine %s failed", plan.engine.name)
                if last:
                    raise
                suspect = suspect or suspect_process_state(str(exc))
                failures.append(_failure(plan.engine.name, exc))
                break
            return dataclasses.replace(done, failures=failures, suspect=suspect)
    raise AssertionError("unreachable: the last plan either returns or raises")


# --- 4.-6. render, qa, deliver in the job's folder -----------------------------------------------------


def _produce(run: _Run, job: RenderJob, selection: Selection, stages: OpenStages, encoder: str,
             emit: Callable[[dict], None] | None) -> tuple[_Rendered, dict, dict]:
    """Render (streaming with `emit`), check and deliver the MP4 from a per-job folder removed afterwards."""
    live = make_live(emit, run.bucket) if emit is not None else None
    with tempfile.TemporaryDirectory(prefix="avatar-job-", dir=run.settings.work_dir) as tmp:
        target = _Target(Path(tmp) / "render.mp4", encoder, stages, live)
        try:
            run.report("render", 0.0)
            if live is not None:
                stem = run.key_for(selection.plans[0].engine)[:-4] if run.digest else "live"
                live.start(store=run.store, name_stem=stem, deadline=run.deadline)
            done = _render_with_fallback(run, selection.plans, job, target)
            if live is not None:
                live.finish()
            info = dict(done.info)
            # an engine's own warnings (e.g. Diff2Lip on a CPU) join the job's, never replace them
            run.warnings.extend(w for w in info.pop("warnings", ()) if w not in run.warnings)
            if run.request.qa:  # 5. qa: the A/V sync self-check on the encoded file
                info["sync"] = _sync(run, job, target.mp4)
            delivered = _deliver(run, job, target.mp4, done, live)  # 6. deliver
        except BaseException:
            if live is not None:
                live.discard()
            raise
        if live is not None and live.first_segment_at is not None:
            run.timer.ms["first_segment"] = round((live.first_segment_at - run.deadline.start) * 1000, 1)
    return done, info, delivered


def _sync(run: _Run, job: RenderJob, mp4: Path) -> dict:
    from .media.sync_check import sync_check

    return run.step("qa", lambda: sync_check(mp4, job.audio.analysis).to_dict())


# --- 6. deliver, and the result ------------------------------------------------------------------------


def _deliver(run: _Run, job: RenderJob, mp4: Path, done: _Rendered, live: LiveOutput | None) -> dict:
    """Bucket URL, local path or inline base64 (a streamed render without a bucket: its inline chunks), with
    the caption file beside it."""
    request, settings = run.request, run.settings
    key = run.key_for(done.engine)
    run.report("deliver", 0.0)
    with run.timer.stage("deliver"):
        if isinstance(live, InlineLive) and run.delivery == "base64":
            delivered = live.delivered()
        elif run.delivery == "path":
            delivered = deliver_path(mp4, settings, name=request.output.name, exact=run.out_path)
        elif run.delivery == "url":
            meta = {"engine": done.engine.name, "engine_version": done.engine.version,
                    "frames": str(done.frames), "options": request.options_digest()[:16]}
            delivered = {**deliver_url(run.store, mp4, key, meta, deadline=run.deadline), "cached": False}
        else:
            delivered = deliver_base64(mp4, settings)
        bucket_key = key if run.delivery == "url" else None
        delivered.update(run.deadline.call(lambda: deliver_captions(request, job.audio, run.bucket, bucket_key),
                                           stage="deliver"))
    return delivered


def _result(run: _Run, job: RenderJob, selection: Selection, done: _Rendered, info: dict, delivered: dict,
            encoder: str) -> dict:
    result = {**delivered, "engine": done.engine.name, "chain": done.chain(), "models": done.models(),
              "encoder": encoder,
              **_summary(run.request, job, done.mode), "frames": done.frames, **info}
    reasons = [selection.reason] if selection.reason else []
    reasons += [f"{f['engine']} failed ({f['code']}: {f['message']})" for f in done.failures]
    if reasons:
        result["fallback_reason"] = "; ".join(reasons)
    if done.failures:
        result["fallback_from"] = done.failures
    if done.suspect:
        result["refresh_worker"] = True  # the SDK recycles the worker after this job
    return result
