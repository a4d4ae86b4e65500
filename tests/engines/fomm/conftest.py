"""FOMM test fixtures: the golden arrays (tests/fixtures/fomm, copied from the shared fixture set) and
det-filled networks, built once per session (filling 60 M values takes seconds)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_engine.engines.fomm.nets import KPDetector, OcclusionAwareGenerator
from avatar_engine.runtime.detweights import fill_module

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "fomm"


def rel_l2(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref))


def image_tensor(u8: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    """The fixture's network input: uint8 HWC RGB -> float32 NCHW in [0, 1] (then cast)."""
    return torch.from_numpy(u8.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(dtype)


def kp_from(golden, prefix: str, dtype=torch.float32) -> dict:
    return {"value": torch.from_numpy(golden[f"{prefix}_value"]).to(dtype),
            "jacobian": torch.from_numpy(golden[f"{prefix}_jacobian"]).to(dtype)}


@pytest.fixture(scope="session")
def golden():
    with np.load(FIXTURES / "golden.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def golden_f64():
    with np.load(FIXTURES / "golden_f64.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def kp_detector():
    return fill_module(KPDetector())


@pytest.fixture(scope="session")
def generator():
    return fill_module(OcclusionAwareGenerator())


@pytest.fixture(scope="session")
def kp_detector_f64(kp_detector):
    return copy.deepcopy(kp_detector).double()


@pytest.fixture(scope="session")
def generator_f64(generator):
    return copy.deepcopy(generator).double()
