"""Diff2Lip test fixtures: the golden arrays (tests/fixtures/diff2lip, copied from the shared fixture set,
see its README) and the det-filled UNet, built once per session (filling 101.7 M values takes seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_engine.engines.diff2lip.config import Diff2LipConfig
from avatar_engine.engines.diff2lip.nets import TFGModel
from avatar_engine.runtime.detweights import fill_module

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "diff2lip"

# A small UNet of the same architecture (every channel count a multiple of GroupNorm's 32 groups) for the
# tests that exercise plumbing rather than upstream's numbers: a forward costs milliseconds.
TINY = Diff2LipConfig(image_size=64, num_channels=32, attention_resolutions=(8,), num_head_channels=32,
                      num_res_blocks=1, audio_num_res_blocks=1)

torch.set_num_threads(2)


def rel_l2(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


def _load(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def golden_unet() -> dict[str, np.ndarray]:
    return _load("golden_unet.npz")


@pytest.fixture(scope="session")
def golden_sampler() -> dict[str, np.ndarray]:
    return _load("golden_sampler.npz")


@pytest.fixture(scope="session")
def det_model() -> TFGModel:
    """The released architecture with det_fill weights (DETWEIGHTS.md), eval, float32."""
    return fill_module(TFGModel())


@pytest.fixture(scope="session")
def tiny_model() -> TFGModel:
    return fill_module(TFGModel(TINY))


@pytest.fixture
def one_thread():
    """Tiny forwards gain nothing from threads, and on a busy CPU OpenMP's spinning made them 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def golden_inputs(golden: dict, rows=slice(None), dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """x_t, t and the conditioning of the golden forward, as the model takes them."""
    def tensor(name):
        return torch.from_numpy(golden[name][rows]).to(dtype)

    kwargs = {name: tensor(name) for name in ("cond_img", "mask", "ref_img", "indiv_mels")}
    return tensor("x_t"), torch.from_numpy(golden["t"][rows]), kwargs
