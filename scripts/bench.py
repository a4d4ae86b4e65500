#!/usr/bin/env python
"""Speed and memory of the worker, measured side by side in one run on this machine.

Prints: cold start (process start -> first job done), per-stage times, real-time factor and cost over the
encode-only floor (the `still` engine, timed beside it) of a 59 s clip at 512x512/25 fps (embedded engine,
phoneme and signal lip-sync), peak RSS of a 10 s and a
5 min render in separate processes (memory must not grow with clip length), and, with
deterministic weights, the neural stages' CPU speed with a GPU estimate from their FLOPs.

    python scripts/bench.py [--quick] [--sections parametric,stream,live,wav2lip,gfpgan,sadtalker,fomm,diff2lip,
                            musetalk]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avatar_engine.evaluate.report import cpu_model  # noqa: E402  (one CPU-name rule for bench and evaluate)

# Paper figures for the GPU estimates: dense fp16 tensor throughput, and the share of it a
# convolutional inference workload typically reaches.
GPUS = {"L4": 121e12, "A10": 125e12, "L40S": 362e12, "A100": 312e12, "H100": 989e12}
UTILISATION = 0.25
CLIP_S = 59.0  # the embedded engine's clip: the bundled speech repeated to about a minute


def speech_clip(seconds: float) -> bytes:
    """The bundled speech, repeated to `seconds`, as a 16 kHz WAV."""
    import wave

    with wave.open(str(REPO / "assets" / "speech_16k.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    n = int(seconds * 16000)
    tiled = np.tile(pcm, n // len(pcm) + 1)[:n]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(tiled.tobytes())
    return buf.getvalue()


def render_once(seconds: float, **options) -> dict:
    from avatar_engine.pipeline import LocalInputs, render
    from avatar_engine.schema import parse_request

    req = parse_request({"size": 512, "fps": 25, "output": {"delivery": "path"}, **options}, local=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = LocalInputs(image=(REPO / "assets" / "astronaut_512.png").read_bytes(), audio=speech_clip(seconds))
        start = time.perf_counter()
        result = render(req, local=local, out_path=str(Path(tmp) / "b.mp4"))
        result["wall_s"] = time.perf_counter() - start
    return result


def child_peak_rss(seconds: float, lipsync: str) -> tuple[float, float]:
    """Render in a fresh process; return (wall s, peak RSS MB) of that process alone (VmHWM: ru_maxrss would
    carry the parent's size over the fork)."""
    code = (f"import sys, json; sys.path.insert(0, {str(REPO)!r}); import scripts.bench as b; "
            f"r = b.render_once({seconds}, lipsync={lipsync!r}); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
            "print(json.dumps({'wall': r['wall_s'], 'rss': int(hwm) / 1024}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["wall"], data["rss"]


def cold_start() -> float:
    """Seconds from `python handler.py` starting to its first (test_input.json) job finishing."""
    import base64

    with tempfile.TemporaryDirectory() as tmp:
        job = {"input": {"image_b64": base64.b64encode((REPO / "assets" / "astronaut_512.png").read_bytes()).decode(),
                         "audio_b64": base64.b64encode((REPO / "assets" / "short_16k.wav").read_bytes()).decode(),
                         "output": {"delivery": "path"}}}
        (Path(tmp) / "test_input.json").write_text(json.dumps(job))
        env = {**os.environ, "OUTPUT_DIR": tmp, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
        start = time.perf_counter()
        subprocess.run([sys.executable, str(REPO / "handler.py")], cwd=tmp, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def section_parametric(quick: bool) -> None:
    print("== embedded engine (parametric), 512x512, 25 fps ==")
    print(f"cold start (process start -> first 2.1 s job done): {cold_start():.2f} s")
    render_once(2.0)  # warm the process: models, decoders, the phone recognizer, encoder probe
    render_once(2.0, engine="still")
    render_once(2.0, lipsync="phonemes")
    # The encode-only floor: the `still` engine (decode + one repeated frame + encode) on the same clip. The
    # embedded engine's cost as a multiple of it carries from one CPU to another better than x real time;
    # each path is timed right after its own floor run (side by side: a shared CPU drifts between runs).
    seconds = CLIP_S
    for lipsync, target in (("signal", 1.25), ("phonemes", 1.35)):
        floor = render_once(seconds, engine="still")
        r = render_once(seconds, lipsync=lipsync)
        t = r["timings_ms"]
        stages = ", ".join(f"{k} {t.get(k, 0):.0f}" for k in ("fetch", "decode", "prepare", "render", "encode", "deliver"))
        print(f"{seconds:.0f} s clip, engine=still (encode-only floor): wall {floor['wall_s']:.2f} s -> "
              f"{seconds / floor['wall_s']:.1f}x real time")
        print(f"{seconds:.0f} s clip, lipsync={lipsync:8s}: wall {r['wall_s']:.2f} s -> {seconds / r['wall_s']:.1f}x real "
              f"time (target >= 10x); the {lipsync} path costs {r['wall_s'] / floor['wall_s']:.2f}x the still floor "
              f"(target <= {target}x) | stage ms: {stages}")
    lengths = (10.0, 60.0) if quick else (10.0, 300.0)
    rss = {s: child_peak_rss(s, "signal") for s in lengths}
    for s, (wall, peak) in rss.items():
        print(f"{s:5.0f} s clip in a fresh process: wall {wall:6.2f} s ({s / wall:4.1f}x real time), peak RSS {peak:6.0f} MB")
    short, long = (rss[s][1] for s in lengths)
    print(f"peak RSS ratio {lengths[1]:.0f} s / {lengths[0]:.0f} s clip: {long / short:.2f} (flat = 1.0; target peak <= 1500 MB)")


def first_segment_s(seconds: float, runs: int) -> list[tuple[float, float]]:
    """(time to the first playable live segment, total job time) of STREAM_OUTPUT renders at 512x512,
    measured from job start by the generator handler itself (the SDK's local server would aggregate)."""
    import asyncio
    import base64

    from avatar_engine.serving.handlers import stream_async
    from avatar_engine.settings import Settings

    settings = Settings(media_bucket=None, bucket_endpoint_url=None)  # inline fMP4 chunks
    payload = {"id": "bench-stream", "input": {
        "image_b64": base64.b64encode((REPO / "assets" / "astronaut_512.png").read_bytes()).decode(),
        "audio_b64": base64.b64encode(speech_clip(seconds)).decode(), "size": 512, "fps": 25, "engine": "parametric"}}

    async def once() -> tuple[float, float]:
        start, first = time.perf_counter(), None
        async for event in stream_async(payload, settings=settings):
            if first is None and event.get("event") == "chunk":
                first = time.perf_counter() - start
        return first, time.perf_counter() - start

    return [asyncio.run(once()) for _ in range(runs)]


def section_stream(quick: bool) -> None:
    print("== streaming output (STREAM_OUTPUT=true), embedded engine, 512x512, 25 fps, warm worker ==")
    from avatar_engine.serving.worker import warm_up

    warm_up()
    first_segment_s(2.0, 1)  # warm the process
    results = first_segment_s(10.0, 3 if quick else 5)
    firsts = sorted(f for f, _ in results)
    print(f"10 s clip: first playable 2 s segment after {firsts[len(firsts) // 2]:.2f} s median, "
          f"{firsts[-1]:.2f} s worst (target < 1.5 s); whole job {sorted(t for _, t in results)[len(results) // 2]:.2f} s")


def _live_run(url: str, bursts: int, *, tts_like: bool) -> tuple[list[float], dict, float]:
    """Speech bursts streamed in 40 ms chunks at real time: (latency per onset, the `ended` stats,
    this process's CPU seconds per wall second while it ran: the session's share of the cores)."""
    from tests.support.live import speech_bursts, stream_speech

    pcm, onsets, inside = speech_bursts(bursts)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = stream_speech(url, pcm, send=inside if tts_like else None)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    ended = run.messages("ended")
    return run.latencies(onsets), ended[0] if ended else {}, cpu


def section_live(quick: bool) -> None:
    """`python -m avatar_engine live`: speech onset sent -> the fragment holding its frame received. The
    client's 40 ms clock and the server's frame clock meet at a random phase per session, which moves
    the figure by up to a frame: the default setting is measured over several sessions, pooled."""
    print("== live session (WS /live), embedded engine, 512x512, 25 fps, loopback, 40 ms PCM chunks at 16 kHz ==")
    from avatar_engine.settings import Settings
    from tests.support.live import running_server

    bursts = 5 if quick else 8
    for jitter_ms, sessions in ((40.0, 2 if quick else 4), (0.0, 1 if quick else 2)):
        with running_server(Settings(live_jitter_ms=jitter_ms)) as (url, live):
            live.ready.wait(60)
            _live_run(url, 1, tts_like=False)  # warm: face fit cache, encoders
            for tts_like in (False, True):
                runs = [_live_run(url, bursts, tts_like=tts_like) for _ in range(sessions)]
                lat_ms = np.array([x for lat, _, _ in runs for x in lat]) * 1000
                stat = {k: np.mean([e.get(k, 0) for _, e, _ in runs]) for k in ("queue_ms", "render_ms", "encode_ms")}
                held = sum(e.get("frames_held", 0) for _, e, _ in runs)
                frames = sum(e.get("frames", 0) for _, e, _ in runs)
                kind = "TTS-like bursts" if tts_like else "mic-like stream"
                print(f"LIVE_JITTER_MS={jitter_ms:<4g} {kind}: latency median {np.median(lat_ms):.0f} ms, "
                      f"p90 {np.percentile(lat_ms, 90):.0f} ms, max {lat_ms.max():.0f} ms over {len(lat_ms)} onsets in "
                      f"{sessions} sessions (target median <= 250 ms) | speech waits in the server's queue "
                      f"{stat['queue_ms']:.0f} ms (jitter margin + frame clock), then per frame: render "
                      f"{stat['render_ms']:.1f} ms, encode {stat['encode_ms']:.1f} ms; frames held {held} of {frames}; "
                      f"process CPU {np.mean([c for _, _, c in runs]) * 100:.0f}% of one core")


def _flops(model, *inputs) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    inputs = [t.clone() for t in inputs]  # FlopCounterMode's module tracker rejects inference tensors
    with FlopCounterMode(display=False) as counter:
        model(*inputs)
    return float(counter.get_total_flops())


def _per_item_ms(call, items: int, reps: int, bf16: bool) -> float:
    """Mean ms per item of `call()` (one warm-up call first) in fp32 or, where native, bf16."""
    import torch

    from avatar_engine.runtime.precision import inference_autocast

    with torch.inference_mode(), inference_autocast("cpu", cpu_bf16=bf16):
        call()
        start = time.perf_counter()
        for _ in range(reps):
            call()
    return (time.perf_counter() - start) * 1000 / (reps * items)


def _precisions() -> tuple[bool, ...]:
    from avatar_engine.runtime.precision import cpu_bf16_supported

    return (False, True) if cpu_bf16_supported() else (False,)


def _gpu_line(flops_per_item: float, unit: str) -> str:
    est = ", ".join(f"{g} ~{peak * UTILISATION / flops_per_item:,.0f}" for g, peak in GPUS.items())
    return f"{flops_per_item / 1e9:.2f} GFLOP per {unit}; GPU estimate at {UTILISATION:.0%} of fp16 peak ({unit}s/s): {est}"


def section_wav2lip(quick: bool) -> None:
    import torch

    from avatar_engine.engines.wav2lip.nets import Wav2Lip
    from avatar_engine.runtime.detweights import fill_module

    print("== Wav2Lip lip stage, deterministic weights ==")
    torch.set_num_threads(os.cpu_count() or 2)
    model = fill_module(Wav2Lip()).to(memory_format=torch.channels_last)
    batch = 16
    audio = torch.randn(batch, 1, 80, 16)
    face = torch.rand(batch, 6, 96, 96).contiguous(memory_format=torch.channels_last)
    for bf16 in _precisions():
        ms = _per_item_ms(lambda: model(audio, face), batch, 2 if quick else 4, bf16)
        print(f"network forward, batch {batch}, {torch.get_num_threads()} threads, {'bf16' if bf16 else 'fp32'}: "
              f"{1000 / ms:.1f} frames/s (target >= 25)")
    print(_gpu_line(_flops(model, audio[:1], face[:1]), "frame"))


def section_gfpgan(quick: bool) -> None:
    import torch

    from avatar_engine.runtime.detweights import fill_module
    from avatar_engine.stages.restore.nets import gfpgan_v14

    print("== GFPGAN v1.4 face restoration, deterministic weights ==")
    model = fill_module(gfpgan_v14())
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    for bf16 in _precisions():
        ms = _per_item_ms(lambda: model(x), 1, 1 if quick else 3, bf16)
        print(f"CPU {'bf16' if bf16 else 'fp32'}: {ms:.0f} ms per 512x512 face")
    print(_gpu_line(_flops(model, x), "face"))


def section_sadtalker(quick: bool) -> None:
    import torch

    from avatar_engine.engines.sadtalker.checkpoints import _build
    from avatar_engine.engines.sadtalker.framing import driving_coeffs, mapping_windows
    from avatar_engine.engines.sadtalker.glue import keypoint_transformation
    from avatar_engine.runtime.detweights import fill_module

    print("== SadTalker 256, deterministic weights, CPU ms per frame by stage ==")
    nets = {name: fill_module(_build(name, "crop")) for name in ("audio2exp", "audio2pose", "kp_extractor",
                                                                  "generator", "mapping")}
    wav = np.frombuffer(speech_clip(4.0)[44:], dtype="<i2").astype(np.float32) / 32768
    n = 100
    start = time.perf_counter()
    coeffs = driving_coeffs(wav, np.zeros(70, np.float32), nets["audio2exp"], nets["audio2pose"], fps=25, n_frames=n)
    coeff_ms = (time.perf_counter() - start) * 1000 / n
    src = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        kp_canonical = nets["kp_extractor"](src)
        feature = nets["generator"].encode_source(src)
        start = time.perf_counter()
        he = nets["mapping"](torch.from_numpy(mapping_windows(coeffs, 0, n)))
        kp = keypoint_transformation(kp_canonical.expand(n, -1, -1), he)
        kp_ms = (time.perf_counter() - start) * 1000 / n
    timings = {}
    for bf16 in _precisions():
        for batch in (1, 2):
            f, a, b = feature.expand(batch, -1, -1, -1, -1), kp[:batch], kp[:1].expand(batch, -1, -1)
            timings[f"{'bf16' if bf16 else 'fp32'} batch {batch}"] = _per_item_ms(
                lambda: nets["generator"].animate(f, a, b), batch, 1 if quick else 2, bf16)
    gen = ", ".join(f"{k}: {ms:.0f}" for k, ms in timings.items())
    print(f"coefficients (Audio2Exp + Audio2Pose): {coeff_ms:.1f} | MappingNet + keypoints: {kp_ms:.1f} | "
          f"generator: {gen}")
    flops = _flops(lambda f, a, b: nets["generator"].animate(f, a, b), feature, kp[:1], kp[:1])
    print(_gpu_line(flops, "frame") + " (target: 25 on an L4)")


def section_fomm(quick: bool) -> None:
    """FOMM vox-256 (det weights): the generator per frame in batches (the source encoded once, as the
    engine does), the keypoint detector per driving frame, and the per-frame FLOPs for the GPU estimate."""
    import torch

    from avatar_engine.engines.fomm.engine import CPU_BATCH
    from avatar_engine.engines.fomm.nets import KPDetector, OcclusionAwareGenerator
    from avatar_engine.runtime.detweights import fill_module

    print("== FOMM vox-256, deterministic weights, CPU ms per frame ==")
    kp_detector, generator = fill_module(KPDetector()).eval(), fill_module(OcclusionAwareGenerator()).eval()
    src = torch.rand(1, 3, 256, 256)
    with torch.no_grad():  # not inference mode: the FLOP counter below takes these as inputs
        kp = kp_detector(src)
        encoding = generator.encode_source(src)
    timings = {}
    for bf16 in _precisions():
        for batch in sorted({1, CPU_BATCH}):
            drive = {k: v.expand(batch, *v.shape[1:]).contiguous() for k, v in kp.items()}
            timings[f"{'bf16' if bf16 else 'fp32'} batch {batch}"] = _per_item_ms(
                lambda: generator.animate(encoding, drive, kp, previews=False), batch, 1 if quick else 2, bf16)
        frames = src.expand(CPU_BATCH, -1, -1, -1).contiguous()
        timings[f"keypoints {'bf16' if bf16 else 'fp32'}"] = _per_item_ms(lambda: kp_detector(frames), CPU_BATCH, 1,
                                                                         bf16)
    print("generator: " + ", ".join(f"{k}: {ms:.0f}" for k, ms in timings.items() if not k.startswith("key"))
          + " | keypoint detector (video driving only): "
          + ", ".join(f"{k.split()[1]}: {ms:.0f}" for k, ms in timings.items() if k.startswith("key")))
    kp_in = {k: v.clone() for k, v in kp.items()}
    per_frame = _flops(lambda s: generator.animate(generator.encode_source(s), kp_in, kp_in, previews=False), src) \
        - _flops(generator.encode_source, src)
    print(_gpu_line(per_frame, "frame") + " (audio driving; a driving video adds "
          f"{_flops(kp_detector, src) / 1e9:.2f} GFLOP a frame for its keypoints)")


def section_diff2lip(quick: bool) -> None:
    """Diff2Lip (det weights): one window of frames sampled as the engine does it, at a reduced step count
    (the CPU figure; 25 steps cost 12.5x as much), and the GPU estimate from one UNet forward's FLOPs x 25."""
    import torch

    from avatar_engine.engines.diff2lip.conditioning import sample_window
    from avatar_engine.engines.diff2lip.nets import TFGModel
    from avatar_engine.runtime.detweights import fill_module
    from avatar_engine.runtime.precision import inference_autocast

    print("== Diff2Lip, deterministic weights, CPU s per frame at a reduced step count ==")
    torch.set_num_threads(os.cpu_count() or 2)
    model = fill_module(TFGModel()).eval()
    steps, batch = 2, 4
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (batch, 128, 128, 3), dtype=np.uint8)
    mels = rng.standard_normal((batch, 80, 16)).astype(np.float32)
    timings = {}
    for bf16 in _precisions():
        with torch.inference_mode(), inference_autocast("cpu", cpu_bf16=bf16):
            start = time.perf_counter()
            sample_window(model, faces, faces[0], mels, steps=steps, seed=7)
        timings["bf16" if bf16 else "fp32"] = (time.perf_counter() - start) / batch
    print(f"steps={steps}, batch {batch}, {torch.get_num_threads()} threads: "
          + ", ".join(f"{k}: {sec:.1f} s/frame (x12.5 at 25 steps: {sec * 12.5 / 60:.1f} min/frame)"
                      for k, sec in timings.items()))
    x = torch.randn(1, 3, 128, 128)
    cond = {"cond_img": torch.randn(1, 3, 128, 128), "mask": torch.ones(1, 1, 128, 128),
            "ref_img": torch.randn(1, 3, 128, 128), "indiv_mels": torch.randn(1, 80, 16)}
    forward = _flops(lambda x_t, t: model(x_t, t, **cond), x, torch.tensor([500]))
    print(_gpu_line(forward * 25, "frame") + f" ({forward / 1e9:.1f} GFLOP per UNet forward x 25 DDIM steps; "
          "the 128 px face only, paste-back not counted)")


def _musetalk_nets():
    """Full-size det-weight MuseTalk (upstream's three configs, tests/fixtures/musetalk): UNet, VAE, whisper."""
    from avatar_engine.engines.musetalk.detweights import det_unet, det_vae

    fix = REPO / "tests" / "fixtures" / "musetalk"
    unet = det_unet(json.loads((fix / "unet_config.json").read_text())["musetalk_json_as_shipped"])
    vae = det_vae(json.loads((fix / "vae_config.json").read_text())["sd_vae_ft_mse_config_json"])
    return unet, vae


def section_musetalk(quick: bool) -> None:
    """MuseTalk 1.5 (det weights, 850 M-parameter UNet): CPU seconds per frame of the lip stage's network work
    (two VAE encodes, one UNet step, one decode per frame) and the GPU estimate from those FLOPs."""
    import torch

    from avatar_engine.engines.musetalk import latents as lat

    print("== MuseTalk 1.5 lip stage, deterministic weights (networks only; crop and paste ~5 ms a frame) ==")
    torch.set_num_threads(os.cpu_count() or 2)
    unet, vae = _musetalk_nets()
    batch = 2 if quick else 4
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (batch, 256, 256, 3), dtype=np.uint8)
    noise, windows = torch.randn(batch, 2, 4, 32, 32), torch.randn(batch, 50, 384)

    def frame_batch():
        latents = lat.unet_input(vae, crops, noise)
        return lat.decode(vae, lat.predict_latents(unet, latents, windows))

    for bf16 in _precisions():
        ms = _per_item_ms(frame_batch, batch, 1, bf16)
        precision = "bf16" if bf16 else "fp32"
        print(f"batch {batch}, {torch.get_num_threads()} threads, {precision}: {ms / 1000:.1f} s/frame")
    encode = _flops(lambda x: vae.encode(x).latent_dist.mean, torch.randn(1, 3, 256, 256))
    step = _flops(lambda x, w: lat.predict_latents(unet, x, w), torch.randn(1, 8, 32, 32), windows[:1])
    decode = _flops(lambda z: lat.decode_raw(vae, z), torch.randn(1, 4, 32, 32))
    per_frame = 2 * encode + step + decode
    print(_gpu_line(per_frame, "frame") + f" (VAE encode {encode / 1e9:.0f} GFLOP x 2, UNet step {step / 1e9:.0f}, "
          f"decode {decode / 1e9:.0f}; a still avatar's latents cached, as upstream's real-time mode: "
          f"{(step + decode) / 1e9:.0f} GFLOP, L4 ~{GPUS['L4'] * UTILISATION / (step + decode):,.0f} frames/s)")


def section_gpu(quick: bool) -> None:
    """On a CUDA machine: the lip network's measured frames/s in fp32 and fp16 (scripts/gpu_check.py runs
    the same function as its bench/wav2lip check)."""
    import torch

    if not torch.cuda.is_available():
        print("== GPU: skipped (no CUDA device; `make gpu-check` on a GPU) ==")
        return
    try:
        from gpu_check import check_bench  # run as scripts/bench.py
    except ImportError:
        from scripts.gpu_check import check_bench

    print(f"== GPU: {torch.cuda.get_device_name(0)} ==")
    print(check_bench("cuda", quick))


def machine_line() -> str:
    """What every figure below depends on: CPU model, cores, native bf16, python."""
    from avatar_engine.runtime.precision import cpu_bf16_supported

    bf16 = "native bf16 (AMX / AVX512-BF16)" if cpu_bf16_supported() else "no native bf16 (networks stay fp32)"
    return f"machine: {cpu_model()}, {os.cpu_count()} cores, {bf16}, python {sys.version.split()[0]}"


SECTIONS = {"parametric": section_parametric, "stream": section_stream, "live": section_live,
            "wav2lip": section_wav2lip,
            "gfpgan": section_gfpgan, "sadtalker": section_sadtalker, "fomm": section_fomm,
            "diff2lip": section_diff2lip, "musetalk": section_musetalk, "gpu": section_gpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs (60 s instead of 5 min for RSS)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    args = parser.parse_args()
    print(machine_line())
    for name in args.sections.split(","):
        try:
            SECTIONS[name](args.quick)
        except ImportError as exc:
            print(f"== {name}: skipped ({exc}) ==")
    return 0


if __name__ == "__main__":
    sys.exit(main())
