"""Engine chains per quality mode, run-time fallback and the CUDA out-of-memory retry."""

from __future__ import annotations

import base64

import pytest

from avatar_engine.engines import AUTO_ORDER, ENGINES, PreparedRender
from avatar_engine.engines import selection as sel
from avatar_engine.engines.base import Engine, EngineStatus
from avatar_engine.errors import AvatarError
from avatar_engine.runtime.device import GIB
from avatar_engine.serving.worker import run_job


class Fake(Engine):
    """An engine whose availability and GPU appetite a test sets."""

    def __init__(self, name: str, available: bool = True, auto: bool = True):
        self.name, self._available, self._auto = name, available, auto

    def status(self, settings):
        return EngineStatus(self._available, "" if self._available else f"{self.name} checkpoint missing")

    def suits_auto(self, settings):
        return self._auto

    def prepare(self, job):
        return ENGINES["still"].prepare(job)


def _engines(**available) -> dict[str, Engine]:
    names = ("sadtalker", "fomm", "diff2lip", "musetalk", "wav2lip", "parametric", "still")
    gpu = {"sadtalker": available.get("sadtalker_gpu", False), "musetalk": available.get("musetalk_gpu", False)}
    return {n: Fake(n, available.get(n, n in ("parametric", "still")), auto=gpu.get(n, True)) for n in names}


@pytest.fixture
def gfpgan_mounted(monkeypatch, tmp_path):
    from avatar_engine.runtime.checkpoints import CheckpointLookup

    path = tmp_path / "GFPGANv1.4.pth"
    path.write_bytes(b"x")
    monkeypatch.setattr("avatar_engine.stages.restore.stage.lookup",
                        lambda settings: CheckpointLookup("GFPGAN_CKPT", (path,), False, path))


def _stages(selection):
    return [plan.stages for plan in selection.plans]


def test_real_time_chain_uses_what_is_mounted(settings):
    bare = sel.select(_engines(), AUTO_ORDER, "auto", "real_time", settings)
    assert _stages(bare) == [("parametric",)] and bare.reason is None
    lips = sel.select(_engines(wav2lip=True), AUTO_ORDER, "auto", "real_time", settings)
    assert _stages(lips) == [("parametric", "wav2lip"), ("parametric",)]
    full = sel.select(_engines(wav2lip=True, sadtalker=True, sadtalker_gpu=True), AUTO_ORDER, "auto", "real_time",
                      settings)
    assert _stages(full)[0] == ("sadtalker", "wav2lip")
    assert full.plans[0].options == {"sadtalker": {"lip_refine": True, "lips": "wav2lip"}}
    # SadTalker without a big enough GPU: seconds per frame, so the real-time chain skips it
    slow = sel.select(_engines(wav2lip=True, sadtalker=True), AUTO_ORDER, "auto", "real_time", settings)
    assert _stages(slow)[0] == ("parametric", "wav2lip")


def test_real_time_chain_prefers_musetalk_lips_on_a_gpu(settings):
    gpu = sel.select(_engines(wav2lip=True, musetalk=True, musetalk_gpu=True, sadtalker=True, sadtalker_gpu=True),
                     AUTO_ORDER, "auto", "real_time", settings)
    assert _stages(gpu)[:3] == [("sadtalker", "musetalk"), ("parametric", "musetalk"), ("parametric", "wav2lip")]
    assert gpu.plans[0].options == {"sadtalker": {"lip_refine": True, "lips": "musetalk"}}
    # on a CPU MuseTalk's 850 M-parameter UNet takes seconds a frame: auto keeps Wav2Lip there
    cpu = sel.select(_engines(wav2lip=True, musetalk=True), AUTO_ORDER, "auto", "real_time", settings)
    assert _stages(cpu) == [("parametric", "wav2lip"), ("parametric",)]
    only_muse = sel.select(_engines(musetalk=True, musetalk_gpu=True), AUTO_ORDER, "auto", "real_time", settings)
    assert _stages(only_muse) == [("parametric", "musetalk"), ("parametric",)]


def test_high_quality_chain_needs_all_three_checkpoints(settings, gfpgan_mounted, monkeypatch):
    partial = sel.select(_engines(fomm=True, wav2lip=True), AUTO_ORDER, "auto", "high_quality", settings)
    assert _stages(partial)[0] == ("parametric", "wav2lip")
    assert "diff2lip" in partial.reason and "fomm" not in partial.reason.split(":")[1]
    full = sel.select(_engines(fomm=True, diff2lip=True), AUTO_ORDER, "auto", "high_quality", settings)
    assert _stages(full) == [("fomm", "diff2lip", "gfpgan"), ("parametric",)]
    assert full.plans[0].restore and full.warnings  # honoured on a CPU, with a warning
    monkeypatch.setattr(sel, "gpu_free_bytes", lambda device=None: 40 * GIB)
    assert not sel.select(_engines(fomm=True, diff2lip=True), AUTO_ORDER, "auto", "high_quality", settings).warnings


def test_auto_picks_high_quality_only_with_a_large_free_gpu(settings, gfpgan_mounted, monkeypatch):
    engines = _engines(fomm=True, diff2lip=True, wav2lip=True)
    assert _stages(sel.select(engines, AUTO_ORDER, "auto", "auto", settings))[0] == ("parametric", "wav2lip")
    monkeypatch.setattr(sel, "gpu_free_bytes", lambda device=None: 8 * GIB)
    assert _stages(sel.select(engines, AUTO_ORDER, "auto", "auto", settings))[0] == ("parametric", "wav2lip")
    monkeypatch.setattr(sel, "gpu_free_bytes", lambda device=None: 13 * GIB)
    assert _stages(sel.select(engines, AUTO_ORDER, "auto", "auto", settings))[0] == ("fomm", "diff2lip", "gfpgan")
    assert sel.auto_picks(engines, AUTO_ORDER, settings) == ["fomm", "diff2lip", "gfpgan"]


def test_explicit_engine_wins_over_the_mode(settings, gfpgan_mounted):
    engines = _engines(fomm=True, diff2lip=True, wav2lip=True)
    assert _stages(sel.select(engines, AUTO_ORDER, "wav2lip", "high_quality", settings)) == [("wav2lip",)]
    with pytest.raises(AvatarError) as err:
        sel.select(engines, AUTO_ORDER, "sadtalker", "auto", settings)
    assert err.value.code == "engine_unavailable" and "sadtalker checkpoint missing" in err.value.message


def _job(portrait_png, short_wav, **extra):
    return {"input": {"image_b64": base64.b64encode(portrait_png).decode(),
                      "audio_b64": base64.b64encode(short_wav).decode(), "size": 256, "fps": 10,
                      "output": {"delivery": "base64"}, **extra}}


class OutOfMemoryError(RuntimeError):
    """Same name as torch.cuda.OutOfMemoryError, which is what the pipeline recognises."""


class Hungry(Engine):
    """Runs out of GPU memory above `fits` frames per batch."""

    name = "hungry"

    def __init__(self, fits: int):
        self.fits, self.tries = fits, []

    def prepare(self, job):
        batch = job.cap_batch(16)
        self.tries.append(batch)
        if batch > self.fits:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        prepared = ENGINES["parametric"].prepare(job)
        return PreparedRender(prepared.frames, {**prepared.info, "batch_size": batch})


def test_cuda_out_of_memory_halves_the_batch_then_steps_down(monkeypatch, settings, portrait_png, short_wav):
    hungry = Hungry(fits=4)
    monkeypatch.setitem(ENGINES, "hungry", hungry)
    monkeypatch.setattr("avatar_engine.engines.AUTO_ORDER", ("hungry", "parametric"))
    result = run_job(_job(portrait_png, short_wav, quality_mode="real_time"), settings=settings)
    assert "error" not in result, result
    assert result["engine"] == "hungry" and hungry.tries == [16, 8, 4] and result["oom_batch_limit"] == 4
    assert result["chain"] == ["hungry"] and "fallback_reason" not in result

    never = Hungry(fits=0)
    monkeypatch.setitem(ENGINES, "hungry", never)
    result = run_job(_job(portrait_png, short_wav, quality_mode="real_time"), settings=settings)
    assert result["engine"] == "parametric" and never.tries == [16, 8, 4, 2, 1]
    assert result["fallback_from"][0] == {"engine": "hungry", "code": "out_of_memory", "message": "OutOfMemoryError"}
    assert "hungry failed (out_of_memory" in result["fallback_reason"]


def test_result_names_the_chain_and_why_it_differs(settings, portrait_png, short_wav):
    result = run_job(_job(portrait_png, short_wav, quality_mode="high_quality"), settings=settings)
    assert "error" not in result, result
    assert result["chain"] == ["parametric"] and "high_quality needs FOMM + Diff2Lip + GFPGAN" in \
        result["fallback_reason"]
    assert result["quality_mode"] == "high_quality"  # the encoder preset asked for still applies
    plain = run_job(_job(portrait_png, short_wav, quality_mode="real_time"), settings=settings)
    assert plain["chain"] == ["parametric"] and "fallback_reason" not in plain and plain["quality_mode"] == "real_time"


def test_a_reference_video_means_fomm(settings):
    engines = _engines(fomm=True, wav2lip=True)
    picked = sel.select(engines, AUTO_ORDER, "auto", "real_time", settings, reference_video=True)
    assert _stages(picked) == [("fomm",)]
    with pytest.raises(AvatarError) as err:
        sel.select(_engines(), AUTO_ORDER, "auto", "auto", settings, reference_video=True)
    assert err.value.code == "engine_unavailable" and "reference_video needs the fomm engine" in err.value.message
