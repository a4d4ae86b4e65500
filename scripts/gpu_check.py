#!/usr/bin/env python3
"""GPU proof: run on the first GPU lent (`make gpu-check`), or on the CPU in quick mode so it cannot rot.

    python scripts/gpu_check.py [--out gpu_check.json]              # CUDA, full sizes, < 8 min on one GPU
    python scripts/gpu_check.py --quick --device cpu --out FILE     # the same checks, small, on the CPU

Checks, each timed, one JSON report ({"device": {...}, "checks": [{"name", "ok", "seconds", "detail"}]}),
exit 1 when any check fails:
- golden/<net>/<fp32|fp16>: every golden the test suite checks (tests/support/device_goldens.py): Wav2Lip 4-D
  and 5-D, GFPGAN, FOMM keypoint detector, generator and dense motion, Diff2Lip UNet with its timestep,
  audio-encoder, audio-style and middle-block taps and the 25-step sampler, SadTalker Audio2Exp, Audio2Pose,
  both MappingNets, keypoint detector, head-pose estimator, ReconNet, generator, SPADE decoder and the torch
  pose/keypoint glue, MuseTalk's whisper encoder (short and > 30 s), positional encoding, VAE and UNet, on the
  device; the host-side mel and alignment goldens (numpy, rel L2 1e-6) once. Outputs are compared by rel L2 to
  the stored float32 arrays; each detail names the worst array, its error and its tolerance. fp32: 1e-4 with
  TF32 off (the CPU tests' float32 bound; MuseTalk's VAE its tests' 3e-3/1e-3/1e-2). fp16 autocast: 3e-2
  (Diff2Lip UNet 5e-2, its audio and middle-block taps 1e-1, sampler 1e-1); on a CPU half precision is bf16,
  tolerance x5. The two keypoint detectors (softmax keypoints, kept in fp32 by their engines) and MuseTalk's
  det-weight VAE (ill-conditioned: bf16 moves its posterior by rel 1.0) say why they have no half-precision
  comparison; MuseTalk's UNet 5e-2, not yet measured. --quick skips GFPGAN, the Diff2Lip UNet and sampler,
  SadTalker's generator and SPADE decoder and MuseTalk's long audio, VAE and UNet (minutes on a CPU) and runs
  Wav2Lip 5-D, Audio2Exp, Audio2Pose, the head-pose estimator and ReconNet in fp32 only. golden/musetalk says
  whether MuseTalk's goldens are wired (it fails when engines/musetalk exists without them).
- render/<engine>: an end-to-end render through the pipeline from det-weight checkpoints written in the
  official layouts (Wav2Lip's legacy-pickle training dict and upstream's TorchScript form, FOMM's
  Logger.save_cpk dict, SadTalker's safetensors + MappingNet files, Diff2Lip's flat state dict). --quick
  renders still, parametric and Wav2Lip, and for FOMM / Diff2Lip writes the files and loads them.
- nvenc: the probe and, where it opens, an NVENC encode; a GPU without NVENC (H100/H200/A100) or a CPU
  is reported as ok with detail "not available".
- oom_step_down: a render under a forced memory cap (torch.cuda.set_per_process_memory_fraction) must
  finish after stepping its batch down; on the CPU the out-of-memory error is simulated at the same spot.
- bench/<net>: the GPU section of `make bench`: frames/s of the lip network at batch 64, fp32 and fp16.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))



def device_info(device: str) -> dict:
    import torch

    info = {"type": device, "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1024 ** 3, 1)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    return info


_DET: dict = {}


def det_wav2lip():
    """One det-weight Wav2Lip per process (filling 36 M weights costs seconds), copied per use."""
    import copy

    from avatar_engine.engines.wav2lip.nets import Wav2Lip
    from avatar_engine.runtime.detweights import fill_module

    if "wav2lip" not in _DET:
        _DET["wav2lip"] = fill_module(Wav2Lip())
    return copy.deepcopy(_DET["wav2lip"])


def check_goldens(device: str, quick: bool) -> list[tuple[str, Callable[[], str]]]:
    """Every network golden of the test suite (tests/support/device_goldens.py) on `device`, in fp32 and in
    half precision: fp16 autocast on CUDA, bf16 autocast on a CPU (tolerance x BF16_FACTOR). --quick runs
    the goldens marked quick (seconds each on a CPU); the others (GFPGAN, Diff2Lip's UNet and sampler,
    SadTalker's generator, MuseTalk's VAE and UNet, ...) take minutes there and run in the full proof only."""
    from tests.support import device_goldens as dg

    checks = [("golden/musetalk", _musetalk_hook)]
    for name, golden in dg.GOLDENS.items():
        if quick and not golden.quick:
            continue
        checks.append((f"golden/{name}/fp32", lambda g=golden: _run_golden(g, device, False)))
        checks.append((f"golden/{name}/fp16", lambda g=golden: _run_golden(g, device, True, quick)))
    return checks


_BUILT: dict = {}  # the golden being checked: its fp32 and fp16 checks share one weight fill


def _release() -> None:
    """Drop the golden's weights after its half-precision check (the OOM check's memory cap comes later)."""
    import torch

    _BUILT.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_golden(golden, device: str, half: bool, quick: bool = False) -> str:
    """One golden forward, compared array by array; the detail names the worst array and the tolerance."""
    from tests.support import device_goldens as dg

    if half and golden.half_tol is None:
        _release()
        return f"not compared in half precision: {golden.why}"
    if half and quick and not golden.quick_half:
        _release()
        return f"--quick: fp32 only (the full proof compares fp16 at rel L2 {dg.tolerance(golden.half_tol, '*'):.2g})"
    try:
        return _compare_golden(golden, device, half)
    finally:
        if half:
            _release()


def _compare_golden(golden, device: str, half: bool) -> str:
    import torch

    from tests.support import device_goldens as dg

    if id(golden) not in _BUILT:
        _BUILT.clear()
        _BUILT[id(golden)] = golden.build(device)
    forward, expected = _BUILT[id(golden)]
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=half):
        got = forward()
    tol = golden.fp32_tol if not half else golden.half_tol
    if half and device != "cuda":
        tol = {k: v * dg.BF16_FACTOR for k, v in tol.items()} if isinstance(tol, dict) else tol * dg.BF16_FACTOR
    worst, err, tol = dg.compare(got, expected, tol)
    assert err <= tol, f"{worst}: rel L2 {err:.2e} > tolerance {tol:.2g}"
    half_name = "fp16 autocast" if device == "cuda" else f"bf16 autocast on CPU (fp16 bound x{dg.BF16_FACTOR})"
    precision = "host numpy" if golden.host else half_name if half else "fp32, TF32 off"
    why = f"; {golden.why}" if golden.why and half else ""
    arrays = f"{len(got)} array{'s' if len(got) > 1 else ''}"
    return f"{arrays}, worst {worst} rel L2 {err:.2e} (tolerance {tol:.2g}, {precision}{why})"


def _musetalk_hook() -> str:
    """MuseTalk (#24): its goldens must be wired whenever its engine is in the tree."""
    from tests.support import device_goldens as dg

    if not (REPO / "avatar_engine/engines/musetalk").is_dir():
        return "engines/musetalk not in this tree: nothing to check (hook: device_goldens.musetalk_goldens)"
    assert dg.musetalk_goldens(), "engines/musetalk exists: add its goldens to device_goldens.musetalk_goldens"
    return f"{len(dg.musetalk_goldens())} MuseTalk goldens run under golden/musetalk/*"


def write_wav2lip_files(root: Path, torchscript: bool) -> None:
    """Det-weight Wav2Lip under MODEL_ROOT in upstream's training layout (legacy pickle, `module.` keys), or
    as upstream's TorchScript Wav2Lip-SD-GAN.pt."""
    import torch

    (root / "wav2lip").mkdir(parents=True, exist_ok=True)
    model = det_wav2lip()
    if torchscript:
        example = (torch.randn(1, 1, 80, 16), torch.rand(1, 6, 96, 96))
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model, example), root / "wav2lip" / "Wav2Lip-SD-GAN.pt")
        return
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "optimizer": {}, "global_step": 0, "global_epoch": 0},
               root / "wav2lip" / "wav2lip_gan.pth", _use_new_zipfile_serialization=False)


def write_engine_files(root: Path, engine: str) -> None:
    """Det-weight checkpoints in each upstream's own save layout under MODEL_ROOT (as the tests build them)."""
    import torch

    from avatar_engine.runtime.detweights import det_state_dict

    if engine == "fomm":
        from avatar_engine.engines.fomm.nets import KPDetector, OcclusionAwareGenerator

        (root / "fomm").mkdir(parents=True, exist_ok=True)
        torch.save({"kp_detector": det_state_dict(KPDetector()), "generator": det_state_dict(OcclusionAwareGenerator()),
                    "discriminator": {}, "optimizer_generator": {}, "optimizer_kp_detector": {}, "epoch": 1},
                   root / "fomm" / "vox-cpk.pth.tar")  # Logger.save_cpk
    elif engine == "diff2lip":
        from avatar_engine.engines.diff2lip.nets import TFGModel

        (root / "diff2lip").mkdir(parents=True, exist_ok=True)
        torch.save(det_state_dict(TFGModel()), root / "diff2lip" / "e7.24.1.3_model260000_paper.pt")  # flat
    elif engine == "sadtalker":
        _write_sadtalker(root / "sadtalker")
    elif engine == "wav2lip":
        write_wav2lip_files(root, False)


def _write_sadtalker(folder: Path) -> None:
    """SadTalker_V0.0.2_256.safetensors (prefixed networks) + both MappingNet .pth.tar files."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from avatar_engine.engines.sadtalker import checkpoints as ck
    from avatar_engine.runtime.detweights import det_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    with np.load(REPO / "tests/fixtures/sadtalker/golden_generator.npz") as z:  # spectral-norm u/v of the fixtures
        snuv = {k.removeprefix("snuv."): torch.from_numpy(z[k]) for k in z.files if k.startswith("snuv.")}

    def det(name: str, preprocess: str = "crop") -> dict:
        sd = det_state_dict(ck._build(name, preprocess))
        return {**sd, **snuv} if name == "generator" else sd

    flat = {f"{prefix}.{k}": v for prefix in ck.SAFETENSORS_PREFIXES for k, v in det(prefix).items()}
    save_file(flat, str(folder / ck.safetensors_name(256)))
    torch.save({"mapping": det("mapping", "crop"), "epoch": 229}, folder / ck.mapping_name("crop"))
    torch.save({"mapping": det("mapping", "full"), "epoch": 109}, folder / ck.mapping_name("full"))


def render_once(root: Path, engine: str, quick: bool, options: dict | None = None) -> dict:
    """One pipeline render with local inputs; returns the result dict."""
    from avatar_engine.engines.wav2lip import engine as w2l_engine
    from avatar_engine.pipeline import LocalInputs, render
    from avatar_engine.schema import parse_request
    from avatar_engine.settings import Settings

    w2l_engine._MODELS.clear()  # each render loads its own files
    settings = Settings(model_root=root, output_dir=str(root / "out"), sadtalker_auto_min_gpu_gb=0)
    size = 128 if quick else 512
    request = parse_request({"engine": engine, "size": size, "fps": 25, "lipsync": "signal",
                             "output": {"delivery": "path"}, **(options or {})}, local=True)
    audio = (REPO / "assets" / ("short_16k.wav" if quick else "speech_16k.wav")).read_bytes()
    local = LocalInputs(image=(REPO / "assets/astronaut_512.png").read_bytes(), audio=audio)
    out = root / "out" / f"{engine}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = render(request, settings=settings, local=local, out_path=str(out))
    assert out.is_file() and out.stat().st_size > 0, "no MP4 written"
    return result


def check_renders(device: str, quick: bool, work: Path) -> list[tuple[str, Callable[[], str]]]:
    """Renders through the pipeline; in --quick the heavy engines only write their files and load them."""
    def run(engine: str, torchscript: bool = False, options: dict | None = None) -> str:
        root = work / f"{engine}{'-ts' if torchscript else ''}"
        if engine == "wav2lip":
            write_wav2lip_files(root, torchscript)
        else:
            write_engine_files(root, engine)
        result = render_once(root, engine, quick, options)
        assert result.get("engine") == engine, f"rendered by {result.get('engine')}: {result.get('fallback_reason')}"
        return f"{result.get('frames')} frames, engine {result.get('engine')}, device {result.get('device', device)}"

    def files_load(engine: str) -> str:
        from avatar_engine.runtime.doctor import examine
        from avatar_engine.settings import Settings

        root = work / f"files-{engine}"
        write_engine_files(root, engine)
        comp = examine(Settings(model_root=root), None).components[engine]
        found = [f for f in comp["files"] if f["found"]]
        assert comp["can_run"] and found and all(f["loads"] for f in found), comp
        return "; ".join(f"{f['key']}: {f['format']}, {f['params']:,} params, loads" for f in found)

    checks = [("render/still", lambda: run("still")), ("render/parametric", lambda: run("parametric")),
              ("render/wav2lip (training .pth)", lambda: run("wav2lip")),
              ("render/wav2lip (TorchScript .pt)", lambda: run("wav2lip", torchscript=True))]
    if quick:  # minutes on a CPU: prove the official-layout files the GPU run renders from
        return checks + [(f"files/{e}", lambda e=e: files_load(e)) for e in ("fomm", "diff2lip")]
    return checks + [("render/fomm", lambda: run("fomm")), ("render/sadtalker", lambda: run("sadtalker")),
                     ("render/diff2lip", lambda: run("diff2lip", options={"diff2lip": {"steps": 10}}))]


def check_nvenc(device: str, quick: bool, work: Path) -> str:
    import numpy as np

    from avatar_engine.media import encode

    encode.pick_encoder.cache_clear()
    if encode.pick_encoder("auto") != "h264_nvenc":
        return "not available (no NVENC on this device: CPUs and H100/H200/A100 have none); libx264 is used"
    import av

    out = work / "nvenc.mp4"
    with av.open(str(out), "w") as container:
        stream = container.add_stream("h264_nvenc", rate=25)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        for i in range(50):
            frame = av.VideoFrame.from_ndarray(np.full((512, 512, 3), i * 5 % 255, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    assert out.stat().st_size > 0
    return f"h264_nvenc encoded 50 frames 512x512 ({out.stat().st_size} bytes)"


@contextmanager
def _simulated_oom(max_batch: int):
    """CPU stand-in for a memory cap: the lip stage raises torch's OutOfMemoryError above `max_batch` frames."""
    import torch

    from avatar_engine.engines.wav2lip import lips

    original = lips.Wav2LipLipSync._render

    def capped(self, batch, mel, starts):
        if len(batch) > max_batch:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated: {len(batch)} > {max_batch} frames)")
        return original(self, batch, mel, starts)

    lips.Wav2LipLipSync._render = capped
    try:
        yield
    finally:
        lips.Wav2LipLipSync._render = original


def check_oom(device: str, quick: bool, work: Path) -> str:
    import torch

    root = work / "oom"
    write_wav2lip_files(root, False)
    if device != "cuda":
        with _simulated_oom(4):
            result = render_once(root, "wav2lip", True)
        how = "simulated OutOfMemoryError above 4 frames"
    else:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        cap = (torch.cuda.memory_allocated() + 600 * 1024 ** 2) / total  # the model fits, batch 128 does not
        torch.cuda.set_per_process_memory_fraction(cap)
        try:
            result = render_once(root, "wav2lip", quick)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            torch.cuda.empty_cache()
        how = f"memory fraction {cap:.4f} ({cap * total / 1024 ** 2:.0f} MiB)"
    limit = (result.get("info") or {}).get("oom_batch_limit") or result.get("oom_batch_limit")
    assert result.get("engine") == "wav2lip", f"fell back to {result.get('engine')}: {result.get('fallback_reason')}"
    assert limit, f"no step-down recorded ({how}); result keys: {sorted(result)}"
    return f"{how}: finished at batch {limit}"


def check_bench(device: str, quick: bool) -> str:
    import torch

    batch, reps = (4, 2) if quick else (64, 20)
    model = det_wav2lip().to(device)
    audio, faces = torch.randn(batch, 1, 80, 16, device=device), torch.rand(batch, 6, 96, 96, device=device)
    figures = []
    for half in (False, True):
        with torch.inference_mode(), torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.bfloat16,
                                                      enabled=half):
            model(audio, faces)
            _sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                model(audio, faces)
            _sync(device)
        fps = batch * reps / (time.perf_counter() - start)
        figures.append(f"{'fp16' if half else 'fp32'} {fps:,.0f} frames/s")
    return f"Wav2Lip forward, batch {batch}: " + ", ".join(figures)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_check(name: str, call: Callable[[], str]) -> dict:
    start = time.perf_counter()
    try:
        detail, ok = call(), True
    except Exception as exc:  # noqa: BLE001 - every failure becomes a report line
        detail, ok = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}", False
    seconds = round(time.perf_counter() - start, 2)
    print(f"{'ok  ' if ok else 'FAIL'} {name} ({seconds} s): {detail.splitlines()[0] if detail else ''}", flush=True)
    return {"name": name, "ok": ok, "seconds": seconds, "detail": detail}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="small sizes (the CPU test)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; use --device cpu --quick for the CPU rehearsal", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 goldens mean fp32, not TF32
    torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        checks = check_goldens(args.device, args.quick) + check_renders(args.device, args.quick, work) + [
            ("nvenc", lambda: check_nvenc(args.device, args.quick, work)),
            ("oom_step_down", lambda: check_oom(args.device, args.quick, work)),
            ("bench/wav2lip", lambda: check_bench(args.device, args.quick))]
        results = [run_check(name, call) for name, call in checks]
    report = {"device": device_info(args.device), "quick": args.quick, "checks": results}
    args.out.write_text(json.dumps(report, indent=2))
    failed = [r["name"] for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)}/{len(results)} checks ok; report: {args.out}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
