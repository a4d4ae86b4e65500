"""Wav2Lip generator (Prajwal et al., ACM MM 2020) and its mel-window schedule, written from the paper's
architecture description; the state_dict layout equals the official `wav2lip.pth` / `wav2lip_gan.pth`.

The network takes a 96x96 BGR face whose lower half is blanked, stacked with an unmasked reference
of the same face (6 channels, values in [0, 1]), plus an 80x16 mel window (200 ms of audio), and
paints the lower half so the mouth matches the audio. It returns BGR in [0, 1].
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from ...audio.encoder import ConvBNReLU, down_block, mel_encoder
from ...audio.mel import MEL_FRAMES_PER_SECOND, MEL_WINDOW
from ...errors import AvatarError
from ...runtime.loading import extract_state_dict, load_strict, read_checkpoint, read_torchscript, sniff_checkpoint

FACE_SIZE = 96


class ConvTransposeBNReLU(nn.Module):
    """Transposed conv (with bias) -> BatchNorm -> ReLU; the decoder's upsampling step."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0, output_padding=0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv_block(x))


def _up(cin: int, cout: int, n_res: int) -> nn.Sequential:
    """A x2 transposed-conv upsampling followed by `n_res` residual 3x3 blocks."""
    layers: list[nn.Module] = [ConvTransposeBNReLU(cin, cout, 3, 2, 1, output_padding=1)]
    layers += [ConvBNReLU(cout, cout, 3, 1, 1, residual=True) for _ in range(n_res)]
    return nn.Sequential(*layers)


class Wav2Lip(nn.Module):
    """The 96x96 Wav2Lip generator (36.3 M parameters)."""

    def __init__(self):
        super().__init__()
        # Each stage's output is kept as a U-Net skip for the decoder (96, 48, 24, 12, 6, 3, 1 px).
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBNReLU(6, 16, 7, 1, 3)),
                down_block(16, 32, 2),
                down_block(32, 64, 3),
                down_block(64, 128, 2),
                down_block(128, 256, 2),
                down_block(256, 512, 1),
                nn.Sequential(ConvBNReLU(512, 512, 3, 1, 0), ConvBNReLU(512, 512, 1, 1, 0)),
            ]
        )
        self.audio_encoder = mel_encoder()
        # Input channels count the previous stage's output plus the concatenated skip.
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBNReLU(512, 512, 1, 1, 0)),
                nn.Sequential(
                    ConvTransposeBNReLU(1024, 512, 3, 1, 0),
                    ConvBNReLU(512, 512, 3, 1, 1, residual=True),
                ),
                _up(1024, 512, 2),
                _up(768, 384, 2),
                _up(512, 256, 2),
                _up(320, 128, 2),
                _up(160, 64, 2),
            ]
        )
        self.output_block = nn.Sequential(
            ConvBNReLU(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """(B,1,80,16) mel + (B,6,96,96) faces -> (B,3,96,96) BGR in [0, 1].

        Training-style 5-D input, (B,T,1,80,16) + (B,6,T,96,96) -> (B,3,T,96,96), is flattened
        time-major (flat index t*B + b) exactly as upstream, so audio/face pairs stay aligned.
        """
        batch = audio_sequences.size(0)
        sequence_input = face_sequences.dim() > 4
        if sequence_input:
            steps = face_sequences.size(2)
            audio_sequences = audio_sequences.transpose(0, 1).flatten(0, 1)
            face_sequences = face_sequences.permute(2, 0, 1, 3, 4).flatten(0, 1)

        x = self.audio_encoder(audio_sequences)

        skips = []
        feat = face_sequences
        for block in self.face_encoder_blocks:
            feat = block(feat)
            skips.append(feat)

        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)

        out = self.output_block(x)
        if sequence_input:
            out = out.reshape(steps, batch, *out.shape[1:]).permute(1, 2, 0, 3, 4)
        return out


# How a checkpoint reached the lip stage (health and the doctor report it).
FORM_PORT = "state dict -> port"
FORM_TS_PORT = "TorchScript, weights -> port"
FORM_TS_MODULE = "TorchScript module (scripted network runs as published)"


class ScriptedWav2Lip(nn.Module):
    """A published TorchScript Wav2Lip whose weights do not fit the port, behind the port's call signature."""

    def __init__(self, scripted):
        super().__init__()
        self.scripted = scripted

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        return self.scripted(audio_sequences, face_sequences)


def load_wav2lip(path: str | os.PathLike) -> nn.Module:
    """Build the lip network from an official checkpoint (eval mode, CPU, float32); `.checkpoint_form` says how.

    Accepts the training layout `{"state_dict", "optimizer", "global_step", "global_epoch"}` or a bare
    state dict, with or without DataParallel `module.` prefixes (read with `weights_only=True`), and
    TorchScript archives such as upstream's `Wav2Lip-SD-GAN.pt`: their weights go into the port when the
    layout matches, else the scripted module runs after an input/output check. Any unreadable, truncated
    or mismatching file raises AvatarError("engine_unavailable") naming it and what it is.
    """
    if sniff_checkpoint(path).kind == "torchscript":
        return _from_torchscript(path)
    state_dict = extract_state_dict(read_checkpoint(path), prefer=("state_dict",), strip=("module.",))
    model = Wav2Lip()
    load_strict(model, state_dict, path)
    model.checkpoint_form = FORM_PORT
    return model.eval()


def _from_torchscript(path: str | os.PathLike) -> nn.Module:
    try:
        scripted = read_torchscript(path)
    except Exception as exc:  # noqa: BLE001 - a damaged archive or ops this torch lacks
        raise AvatarError("engine_unavailable", f"checkpoint {path} is a TorchScript archive that torch.jit.load "
                                                f"refused: {type(exc).__name__}: {exc}") from None
    state_dict = extract_state_dict(dict(scripted.state_dict()), prefer=(), strip=("module.",))
    model = Wav2Lip()
    own = model.state_dict()
    if state_dict.keys() == own.keys() and all(state_dict[k].shape == own[k].shape for k in own):
        model.load_state_dict({k: v.detach().float() if v.is_floating_point() else v for k, v in state_dict.items()})
        model.checkpoint_form = FORM_TS_PORT
        return model.eval()
    wrapped = ScriptedWav2Lip(scripted).float().eval()
    check_lip_network(wrapped, path)
    wrapped.checkpoint_form = FORM_TS_MODULE
    return wrapped


def check_lip_network(model: nn.Module, path: str | os.PathLike) -> None:
    """Refuse a network that does not take (B,1,80,16) mel + (B,6,96,96) faces in [0, 1] and return
    (B,3,96,96) in [0, 1]: anything else would paint garbage mouths instead of failing."""
    gen = torch.Generator().manual_seed(0)
    mel = torch.randn(2, 1, 80, MEL_WINDOW, generator=gen)
    faces = torch.rand(2, 6, FACE_SIZE, FACE_SIZE, generator=gen)
    try:
        with torch.inference_mode():
            out = model(mel, faces)
    except Exception as exc:  # noqa: BLE001 - a network for another input size or layout
        raise AvatarError("engine_unavailable", f"checkpoint {path}: the TorchScript network does not take Wav2Lip's "
                                                f"inputs (2,1,80,16) mel + (2,6,96,96) faces: {type(exc).__name__}: "
                                                f"{str(exc).splitlines()[0][:200]}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 3, FACE_SIZE, FACE_SIZE):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AvatarError("engine_unavailable", f"checkpoint {path}: the TorchScript network returns {got}, "
                                                f"the lip stage needs (2,3,96,96)")
    low, high = float(out.min()), float(out.max())
    if not (torch.isfinite(out).all() and low >= -1e-3 and high <= 1 + 1e-3):
        raise AvatarError("engine_unavailable", f"checkpoint {path}: the TorchScript network's output spans "
                                                f"[{low:.3g}, {high:.3g}], the lip stage needs values in [0, 1]")


def mel_chunk_starts(mel_frames: int, fps: float, n_frames: int | None = None) -> list[int]:
    """Start column of the 16-frame mel window for each video frame.

    Frame i starts at int(i * 80/fps), clamped to the last full window (mel_frames - 16).
    With `n_frames=None` this is upstream's list: it stops at the first clamped frame, which drops
    the last ~3 video frames of the audio. Pass `n_frames = ceil(duration * fps)` to cover the full
    duration; every frame past upstream's cutoff then reuses the last window.
    """
    if mel_frames < MEL_WINDOW:
        raise ValueError(f"need at least {MEL_WINDOW} mel frames (0.2 s of audio), got {mel_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = MEL_FRAMES_PER_SECOND / float(fps)
    last = mel_frames - MEL_WINDOW
    if n_frames is None:
        starts = []
        while (start := int(len(starts) * step)) <= last:
            starts.append(start)
        return starts + [last]
    return [min(int(i * step), last) for i in range(n_frames)]
