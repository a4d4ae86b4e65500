"""Upstream's Wav2Lip of today is a TorchScript archive (Wav2Lip-SD-GAN.pt, Rudrabha/Wav2Lip#743): the same
det weights saved as a training .pth, as TorchScript traced from the port, and traced inside a wrapper whose
keys do not match must paint the same frames; a scripted network of the wrong shape or range is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from avatar_engine.engines.wav2lip.engine import lookup
from avatar_engine.engines.wav2lip.lips import Wav2LipLipSync
from avatar_engine.engines.wav2lip.nets import (
    FORM_PORT,
    FORM_TS_MODULE,
    FORM_TS_PORT,
    Wav2Lip,
    load_wav2lip,
)
from avatar_engine.errors import AvatarError
from avatar_engine.runtime.detweights import fill_module
from avatar_engine.settings import Settings

pytestmark = pytest.mark.slow  # two traces of a 36 M-parameter network: ~10-40 s on a shared CPU


class _Generator(nn.Module):
    """A wrapper as a re-exporter might write it: the same network under other state-dict keys."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.generator = net

    def forward(self, audio, faces):
        return self.generator(audio, faces)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("w2l")
    model = fill_module(Wav2Lip())
    example = (torch.randn(1, 1, 80, 16), torch.rand(1, 6, 96, 96))
    pth = root / "wav2lip_gan.pth"
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "optimizer": {}, "global_step": 1, "global_epoch": 1}, pth,
               _use_new_zipfile_serialization=False)  # upstream's training layout, legacy pickle
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(model, example), root / "Wav2Lip-SD-GAN.pt")
        torch.jit.save(torch.jit.trace(_Generator(model), example), root / "Wav2Lip-SD-NOGAN.pt")
    return root


def _frames(path) -> list[np.ndarray]:
    model = load_wav2lip(path)
    stage = Wav2LipLipSync(model, "cpu", batch_size=4)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (160, 128, 3), dtype=np.uint8)
    audio = (0.1 * np.sin(np.linspace(0, 400, 16000 // 2))).astype(np.float32)
    return model.checkpoint_form, list(stage.run(iter([image] * 6), (20, 130, 14, 114), audio, 25, n_frames=6))


def test_every_published_form_paints_the_same_frames(files):
    form_pth, reference = _frames(files / "wav2lip_gan.pth")
    form_ts, traced = _frames(files / "Wav2Lip-SD-GAN.pt")
    form_wrapped, wrapped = _frames(files / "Wav2Lip-SD-NOGAN.pt")
    assert (form_pth, form_ts, form_wrapped) == (FORM_PORT, FORM_TS_PORT, FORM_TS_MODULE)
    for got in (traced, wrapped):
        assert len(got) == len(reference) == 6
        for a, b in zip(got, reference):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float rounding only


def test_lookup_finds_upstream_names_and_any_torchscript_pt(files, tmp_path):
    settings = Settings(model_root=files.parent)
    (files.parent / "wav2lip").mkdir(exist_ok=True)
    only_sd = files.parent / "wav2lip" / "Wav2Lip-SD-NOGAN.pt"
    only_sd.write_bytes((files / "Wav2Lip-SD-NOGAN.pt").read_bytes())
    assert lookup(settings).path == only_sd
    only_sd.rename(only_sd.with_name("my_wav2lip_export.pt"))
    assert lookup(settings).path.name == "my_wav2lip_export.pt"


class _WrongRange(nn.Module):
    def forward(self, audio, faces):
        return faces[:, :3] * 255.0


class _WrongSize(nn.Module):
    def forward(self, audio, faces):
        return nn.functional.interpolate(faces[:, :3], size=(288, 288))


@pytest.mark.parametrize("net, words", [(_WrongRange(), "values in [0, 1]"), (_WrongSize(), "(2,3,96,96)")])
def test_scripted_network_of_another_shape_or_range_is_refused(tmp_path, net, words):
    path = tmp_path / "other.pt"
    torch.jit.save(torch.jit.script(net), path)
    with pytest.raises(AvatarError, match=r"engine_unavailable|TorchScript") as info:
        load_wav2lip(path)
    assert words in info.value.message and str(path) in info.value.message
