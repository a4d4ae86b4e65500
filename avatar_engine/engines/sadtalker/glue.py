"""SadTalker glue math around the networks: audio features, blinks, chunked audio->coefficient inference,
pose smoothing, head-pose/keypoint transforms and the MappingNet input windows.

Follows OpenTalker/SadTalker (Apache-2.0) `generate_batch.py`, `utils/audio.py`, `test_audio2coeff.py`,
`audio2exp_models/audio2exp.py`, `audio2pose_models/audio2pose.py`, `generate_facerender_batch.py` and
`facerender/modules/make_animation.py`. Pure functions: numpy for data prep, torch where networks run.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import savgol_filter

from ...audio import mel
from ...errors import AvatarError

SEMANTIC_RADIUS = 13
BLINK_SHAPE = (0.5, 0.9, 1.0, 0.9, 0.5)
NUM_POSE_STYLES = 46


# --- audio features ---------------------------------------------------------------------------------


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """SadTalker's log-mel (80, 1 + len//200), float64: the shared front end with zero padding."""
    return mel.melspectrogram(wav, padding="zero", dtype=np.float64)


def num_video_frames(num_samples: int, fps: float = 25) -> int:
    """Upstream's truncating count, floor(samples / (16000/fps)), kept for `audio_features`' golden parity.
    Deliberate exception to the one frame-count rule (`audio.frames`): the engine pads the audio to whole
    frames first (`framing.pad_audio`), so for it the two agree."""
    return int(num_samples / (mel.SAMPLE_RATE / fps))


def audio_features(wav16k: np.ndarray, fps: float = 25) -> tuple[np.ndarray, np.ndarray]:
    """16 kHz mono float wav -> (orig_mel (M, 80) float64, indiv_mels (T, 80, 16) float32).

    The wav is cut / zero-padded to T*16000/fps samples. Frame i uses mel rows
    int(80*(i-2)/fps) ... +15, clamped to the spectrogram (Python int truncation toward zero).
    """
    wav = np.asarray(wav16k, dtype=np.float32).reshape(-1)
    t = num_video_frames(len(wav), fps)
    if t < 1:
        raise AvatarError("invalid_input", f"audio too short for one video frame ({len(wav)} samples)")
    length = int(t * (mel.SAMPLE_RATE / fps))
    wav = wav[:length] if len(wav) >= length else np.pad(wav, (0, length - len(wav)))
    orig_mel = melspectrogram(wav).T
    start = (mel.MEL_FRAMES_PER_SECOND * ((np.arange(t) - 2) / float(fps))).astype(np.int64)
    idx = np.clip(start[:, None] + np.arange(mel.MEL_WINDOW)[None, :], 0, orig_mel.shape[0] - 1)
    indiv = orig_mel[idx].transpose(0, 2, 1)
    return orig_mel, indiv.astype(np.float32)


# --- blinks -----------------------------------------------------------------------------------------


def blink_sequence(
    num_frames: int, rng: np.random.Generator | int | None, *, fps: float = 25, min_gap_s: float = 2.0, max_gap_s: float = 6.0
) -> np.ndarray:
    """Eye-blink ratios (T,) float32: a 5-frame blink [.5,.9,1,.9,.5] after every random 2-6 s gap.

    Upstream draws gaps of 10..min(T/2, 70) frames with `random`; here gaps are uniform in
    [min_gap_s, max_gap_s] from a numpy Generator, so a seed reproduces the sequence.
    """
    rng = np.random.default_rng(rng)
    ratio = np.zeros(num_frames, dtype=np.float32)
    lo, hi = int(round(min_gap_s * fps)), int(round(max_gap_s * fps))
    frame = 0
    while True:
        start = frame + int(rng.integers(lo, hi + 1))
        if start + len(BLINK_SHAPE) > num_frames - 1:
            return ratio
        ratio[start : start + len(BLINK_SHAPE)] = BLINK_SHAPE
        frame = start + len(BLINK_SHAPE)


# --- audio -> coefficients ----------------------------------------------------------------------------


@torch.no_grad()
def audio2exp_test(net, indiv_mels: torch.Tensor, ref_exp: torch.Tensor, ratio: torch.Tensor, chunk: int = 10) -> torch.Tensor:
    """Audio2Exp.test: indiv_mels (bs, T, 1, 80, 16), ref_exp (bs, T, >=64), ratio (bs, T[, 1]) -> (bs, T, 64).

    Runs `net` (SimpleWrapperV2) on chunks of `chunk` frames.
    """
    out = []
    for i in range(0, indiv_mels.shape[1], chunk):
        mels = indiv_mels[:, i : i + chunk]
        out.append(net(mels.reshape(-1, 1, 80, 16), ref_exp[:, i : i + chunk, :64], ratio[:, i : i + chunk]))
    return torch.cat(out, dim=1)


def pose_chunks(num_frames: int, seq_len: int = 32) -> int:
    """How many CVAE chunks (= noise vectors) Audio2Pose uses for `num_frames` (frame 0 is the reference)."""
    div, rem = divmod(max(num_frames - 1, 0), seq_len)
    return div + (rem != 0)


def pose_noise(num_frames: int, rng: np.random.Generator | int | None, bs: int = 1, seq_len: int = 32, latent: int = 64) -> torch.Tensor:
    """Standard-normal CVAE latents (chunks, bs, latent) from a numpy Generator (upstream: torch.randn)."""
    rng = np.random.default_rng(rng)
    z = rng.standard_normal((pose_chunks(num_frames, seq_len), bs, latent))
    return torch.from_numpy(z.astype(np.float32))


@torch.no_grad()
def audio2pose_test(
    net, indiv_mels: torch.Tensor, ref_pose: torch.Tensor, class_id: torch.Tensor, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio2Pose.test: indiv_mels (bs, T, 1, 80, 16), ref_pose (bs, 6), class_id (bs,), z (chunks, bs, latent).

    Frame 0 gets zero motion; frames 1.. are decoded in `seq_len` chunks, the remainder from the last
    `seq_len` frames keeping its tail. Returns (motion (bs, T, 6), pose = ref_pose + motion).
    """
    seq_len = net.seq_len
    mels = indiv_mels[:, 1:]
    div, rem = divmod(mels.shape[1], seq_len)
    if z.shape[0] != div + (rem != 0):
        raise ValueError(f"need {div + (rem != 0)} noise vectors, got {z.shape[0]}")
    parts = [torch.zeros_like(ref_pose)[:, None]]
    for i in range(div):
        parts.append(net(mels[:, i * seq_len : (i + 1) * seq_len], ref_pose, class_id, z[i]))
    if rem:
        parts.append(net(mels[:, -seq_len:], ref_pose, class_id, z[div])[:, -rem:])
    motion = torch.cat(parts, dim=1)
    return motion, ref_pose[:, None] + motion


def smooth_pose(pose: np.ndarray) -> np.ndarray:
    """Savitzky-Golay (window 13, order 2) along the time axis -2; shorter clips use the largest odd window."""
    pose = np.asarray(pose, dtype=np.float64)
    t = pose.shape[-2]
    window = 13 if t >= 13 else int((t - 1) / 2) * 2 + 1
    if window <= 2:
        return pose.copy()
    return savgol_filter(pose, window, 2, axis=-2)


def audio_to_coeffs(
    wav16k: np.ndarray,
    ref_coeff70: np.ndarray,
    audio2exp_net,
    audio2pose_net,
    *,
    fps: float = 25,
    pose_style: int = 0,
    seed: int = 0,
    still: bool = False,
    expression_scale: float = 1.0,
    use_blink: bool = True,
) -> np.ndarray:
    """Speech + first-frame 3DMM coefficients -> per-frame driving coefficients (T, 70) float32.

    [0:64] expression (Audio2Exp, scaled by `expression_scale`), [64:70] head pose (Audio2Pose with
    style `pose_style` in 0..45, Savitzky-Golay smoothed; `still` keeps the reference pose). `seed`
    fixes blinks and pose latents.
    """
    if not 0 <= int(pose_style) < NUM_POSE_STYLES:
        raise AvatarError("invalid_input", f"pose_style must be in 0..{NUM_POSE_STYLES - 1}, got {pose_style}")
    ref = np.asarray(ref_coeff70, dtype=np.float32).reshape(-1)[:70]
    _, indiv = audio_features(wav16k, fps)
    t = indiv.shape[0]
    rng = np.random.default_rng(seed)
    ratio = blink_sequence(t, rng, fps=fps) if use_blink else np.zeros(t, dtype=np.float32)
    mels = torch.from_numpy(indiv)[None, :, None]
    ref_seq = torch.from_numpy(np.repeat(ref[None, None], t, axis=1))
    exp = audio2exp_test(audio2exp_net, mels, ref_seq, torch.from_numpy(ratio)[None])[0].numpy()
    ref_pose = torch.from_numpy(ref[None, 64:70])
    z = pose_noise(t, rng, seq_len=audio2pose_net.seq_len, latent=audio2pose_net.latent_size)
    _, pose = audio2pose_test(audio2pose_net, mels, ref_pose, torch.tensor([int(pose_style)]), z)
    pose = smooth_pose(pose[0].numpy())
    coeffs = np.concatenate([exp * expression_scale, pose], axis=1).astype(np.float32)
    if still:
        coeffs[:, 64:] = ref[64:70]
    return coeffs


# --- face-render glue -------------------------------------------------------------------------------


def headpose_pred_to_degree(pred: torch.Tensor) -> torch.Tensor:
    """66-bin logits (bs, 66) -> degrees (bs,): softmax expectation * 3 - 99."""
    idx = torch.arange(pred.shape[1], dtype=pred.dtype, device=pred.device)
    return torch.sum(F.softmax(pred, dim=1) * idx, dim=1) * 3 - 99


def get_rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees (bs,) -> R = Rx(pitch) Ry(yaw) Rz(roll) (bs, 3, 3), using 3.14 for pi as upstream does."""
    yaw, pitch, roll = (a / 180 * 3.14 for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)

    def mat(*rows):
        return torch.stack(rows, dim=1).reshape(-1, 3, 3)

    rx = mat(one, zero, zero, zero, torch.cos(pitch), -torch.sin(pitch), zero, torch.sin(pitch), torch.cos(pitch))
    ry = mat(torch.cos(yaw), zero, torch.sin(yaw), zero, one, zero, -torch.sin(yaw), zero, torch.cos(yaw))
    rz = mat(torch.cos(roll), -torch.sin(roll), zero, torch.sin(roll), torch.cos(roll), zero, zero, zero, one)
    return rx @ ry @ rz


def keypoint_transformation(kp_canonical: torch.Tensor, he: dict, wo_exp: bool = False) -> torch.Tensor:
    """Canonical keypoints (bs, K, 3) + MappingNet output `he` -> driven keypoints (bs, K, 3).

    kp @ R^T + t + exp.view(bs, K, 3). Optional `he['yaw_in'/'pitch_in'/'roll_in']` (degrees) override the
    predicted angles. As upstream, `he['t'][:, 0]` and `he['t'][:, 2]` are zeroed **in place**.
    """
    yaw = he["yaw_in"] if "yaw_in" in he else headpose_pred_to_degree(he["yaw"])
    pitch = he["pitch_in"] if "pitch_in" in he else headpose_pred_to_degree(he["pitch"])
    roll = he["roll_in"] if "roll_in" in he else headpose_pred_to_degree(he["roll"])
    rot = get_rotation_matrix(yaw, pitch, roll)
    t, exp = he["t"], he["exp"]
    if wo_exp:
        exp = exp * 0
    t[:, 0] = 0
    t[:, 2] = 0
    kp = torch.einsum("bmp,bkp->bkm", rot, kp_canonical)
    return kp + t[:, None, :] + exp.reshape(exp.shape[0], -1, 3)


def transform_semantic_1(semantic: np.ndarray, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """Source coefficients (1, C) -> MappingNet input (C, 2*radius+1): the one frame repeated."""
    return np.repeat(np.asarray(semantic)[:1], 2 * radius + 1, axis=0).T


def transform_semantic_target(coeffs: np.ndarray, frame_index: int, radius: int = SEMANTIC_RADIUS) -> np.ndarray:
    """Coefficient sequence (T, C) -> MappingNet input (C, 2*radius+1) centred on `frame_index`, edges clamped."""
    coeffs = np.asarray(coeffs)
    idx = np.clip(np.arange(frame_index - radius, frame_index + radius + 1), 0, coeffs.shape[0] - 1)
    return coeffs[idx].T
