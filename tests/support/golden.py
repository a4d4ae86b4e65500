"""Golden comparisons that hold on any x86-64 CPU, and the defects that must break them.

Why float64: float32 rounding differs by CPU (kernel choice, FMA/vector width, thread split), and det-filled
weights amplify it in ill-conditioned arrays (per-channel std of deep activations, SPADE InstanceNorms) past
1e-4 rel L2 (issue #11: AVX2-only AMD EPYC). Rebuilt in float64, a port's result is the same on every CPU to
~1e-13, so its distance to a float32 golden is a fixed number: the golden's own float32 error, which the
fixture READMEs measured ("fp64 vs stored fp32"). A tolerance a few times above that figure is therefore
CPU-independent and still tight enough to catch a wrong port; every golden test pairs it with a mutation
test (a realistic defect must push some array past its tolerance).

Simulate other CPUs with `ATEN_CPU_CAPABILITY=avx2|default` (ATen kernels), `ONEDNN_MAX_CPU_ISA=AVX2`
(convolutions), `MKL_ENABLE_INSTRUCTIONS=AVX2` (matmul) and `torch.set_num_threads(1)`.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def rel_l2(actual, expected) -> float:
    """‖actual − expected‖ / ‖expected‖ in float64 (the metric every fixture README states)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


def float64_copy(module: nn.Module) -> nn.Module:
    """An eval-mode float64 twin of a det-filled float32 module (the original is left as it is)."""
    return copy.deepcopy(module).double().eval()


def as64(array) -> torch.Tensor:
    """A stored golden input as a float64 tensor (float32 inputs are widened exactly)."""
    return torch.from_numpy(np.asarray(array)).double()


def channel_stats(tensor: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (axis 1) mean and std (ddof 0) in float64: the fixtures' `out_probe_*` reduction."""
    t = tensor.detach().double()
    dims = [d for d in range(t.dim()) if d != 1]
    return t.mean(dim=dims).numpy(), t.std(dim=dims, unbiased=False).numpy()


@contextmanager
def first_outputs(model: nn.Module, paths) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of the first forward call of each dotted submodule path while the block runs."""
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for path in paths:
        def hook(_module, _inputs, output, path=path):
            if path not in seen:
                seen[path] = output.detach().clone()

        handles.append(modules[path].register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def probe_paths(golden: Mapping) -> list[str]:
    """Module paths with stored per-channel probes (`out_probe_mean.<path>`)."""
    return sorted(k.removeprefix("out_probe_mean.") for k in golden if k.startswith("out_probe_mean."))


def probe_arrays(outputs: Mapping[str, torch.Tensor], prefix: str = "out_probe_") -> dict[str, np.ndarray]:
    """`{out_probe_mean.<path>: …, out_probe_std.<path>: …}` from recorded submodule outputs."""
    arrays = {}
    for path, tensor in outputs.items():
        arrays[f"{prefix}mean.{path}"], arrays[f"{prefix}std.{path}"] = channel_stats(tensor)
    return arrays


def _tolerance(name: str, tolerances: Mapping[str, float]) -> float:
    """Exact name first, then the longest matching `prefix*` pattern, then `*`."""
    if name in tolerances:
        return tolerances[name]
    prefixes = [p for p in tolerances if p.endswith("*") and name.startswith(p[:-1])]
    if not prefixes:
        raise KeyError(f"no tolerance for {name!r}")
    return tolerances[max(prefixes, key=len)]


def mismatches(got: Mapping[str, object], golden: Mapping, tolerances: Mapping[str, float]) -> dict[str, float]:
    """rel L2 of every array in `got` that is not below its tolerance (or has the wrong shape: inf)."""
    bad = {}
    for name, value in got.items():
        value = np.asarray(value.detach().numpy() if isinstance(value, torch.Tensor) else value)
        ref = np.asarray(golden[name])
        error = rel_l2(value, ref) if value.shape == ref.shape else float("inf")
        if not error < _tolerance(name, tolerances):
            bad[name] = error
    return bad


def assert_golden(got: Mapping[str, object], golden: Mapping, tolerances: Mapping[str, float],
                  expected: set[str] | None = None) -> None:
    """Every array matches its golden; `expected` (if given) must be exactly the set of names compared."""
    if expected is not None:
        assert set(got) == set(expected), f"compared {sorted(got)} but the golden holds {sorted(expected)}"
    bad = mismatches(got, golden, tolerances)
    assert not bad, f"rel L2 at or above tolerance: {bad}"


def assert_defect_caught(got: Mapping[str, object], golden: Mapping, tolerances: Mapping[str, float]) -> dict:
    """The mutation-test side: a deliberately broken port must fail the same comparison."""
    bad = mismatches(got, golden, tolerances)
    assert bad, "the defect went unnoticed: every array still matches its golden"
    return bad


@contextmanager
def edited(tensor: torch.Tensor, edit) -> Iterator[None]:
    """Apply `edit(tensor)` in place (a weight defect) and restore the original values afterwards."""
    saved = tensor.detach().clone()
    with torch.no_grad():
        edit(tensor)
    try:
        yield
    finally:
        with torch.no_grad():
            tensor.copy_(saved)


def swap_rows(i: int = 0, j: int = 1, dim: int = 0):
    """An `edited` edit: swap index i and j along `dim` (conv output channels for dim 0; a mis-ordered port)."""
    def edit(weight: torch.Tensor) -> None:
        weight.index_copy_(dim, torch.tensor([i, j]), weight.index_select(dim, torch.tensor([j, i])))

    return edit


def _conv3d_by_depth_slices(x: torch.Tensor, conv: nn.Conv3d, slices_per_call: int = 4) -> torch.Tensor:
    """conv3d as a sum over kernel depth of 2-D convolutions of depth slices (same sums, other order)."""
    b, _, d, _, _ = x.shape
    pd, ph, pw = conv.padding
    kd = conv.weight.shape[2]
    xp = F.pad(x, (0, 0, 0, 0, pd, pd))
    d_out = d + 2 * pd - kd + 1
    out = None
    for k in range(kd):
        planes = xp[:, :, k:k + d_out].transpose(1, 2).reshape(b * d_out, x.shape[1], *x.shape[3:])
        y = torch.cat([F.conv2d(chunk, conv.weight[:, :, k], None, padding=(ph, pw))
                       for chunk in planes.split(slices_per_call)])
        out = y if out is None else out + y
    out = out.reshape(b, d_out, *out.shape[1:]).transpose(1, 2)
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1, 1)


def conv3d_by_slices(model: nn.Module) -> nn.Module:
    """Route every (stride-1, undilated, ungrouped) Conv3d of a float64 model through 2-D convolutions.

    CPU float64 conv3d has no oneDNN kernel: its unfold needs ~20 GB for SadTalker's generator at 256 px;
    depth slices need < 2 GB and are as exact. Returns the model (patched in place, instance-level).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            assert module.stride == (1, 1, 1) and module.dilation == (1, 1, 1) and module.groups == 1
            assert module.padding_mode == "zeros"
            module.forward = lambda x, conv=module: _conv3d_by_depth_slices(x, conv)
    return model
