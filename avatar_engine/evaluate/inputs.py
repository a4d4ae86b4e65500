"""A scenario's request: the portrait and speech as base64 (the same bytes for every target), with
generated audio where the scenario asks for it (silence, a clip looped longer, background noise)."""

from __future__ import annotations

import base64
import io
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.io import decode_audio
from ..errors import AvatarError
from .suite import Scenario

RATE = 16000


@dataclass
class PreparedInput:
    """The request payload and what the evaluator knows of its audio beforehand."""

    payload: dict
    audio_s: float | None  # None for text: the voice decides the length


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    """16-bit mono WAV of float samples in -1..1."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buf.getvalue()


def _read_speech(path: str) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AvatarError("invalid_input", f"audio file {path}: {exc.strerror or exc}") from None
    return decode_audio(data, max_seconds=3600, min_seconds=0.0).analysis


def _noise(n: int, seed: int) -> np.ndarray:
    """Background noise: half white, half low-passed (a room's rumble), unit RMS, seeded."""
    from scipy.signal import lfilter

    white = np.random.default_rng(seed).standard_normal(n)
    rumble = lfilter([0.03], [1.0, -0.97], white)
    mixed = 0.5 * rumble / (rumble.std() + 1e-9) + 0.5 * white
    return mixed / (mixed.std() + 1e-9)


def generated_audio(spec: dict) -> np.ndarray:
    """16 kHz samples for a generator spec: `{"silence_s"}` or `{"file", "loop_to_s"?, "noise_snr_db"?}`."""
    if "silence_s" in spec:
        return np.zeros(int(float(spec["silence_s"]) * RATE), np.float32)
    if "file" not in spec:
        raise AvatarError("invalid_input", f"audio spec {spec}: needs `file` or `silence_s`")
    speech = _read_speech(spec["file"])
    if spec.get("loop_to_s"):
        n = int(float(spec["loop_to_s"]) * RATE)
        speech = np.tile(speech, n // max(1, len(speech)) + 1)[:n]
    if spec.get("noise_snr_db") is not None:
        active = np.abs(speech) > 0.01 * (np.abs(speech).max() + 1e-9)
        speech_rms = float(np.sqrt(np.mean(speech[active] ** 2))) if active.any() else 0.1
        noise_rms = speech_rms / 10 ** (float(spec["noise_snr_db"]) / 20)
        speech = speech + noise_rms * _noise(len(speech), int(spec.get("noise_seed", 0)))
    return speech.astype(np.float32)


def _audio_bytes(scenario: Scenario) -> tuple[bytes, float]:
    if isinstance(scenario.audio, dict):
        samples = generated_audio(scenario.audio)
        return wav_bytes(samples), len(samples) / RATE
    try:
        data = Path(scenario.audio).read_bytes()
    except OSError as exc:
        raise AvatarError("invalid_input", f"audio file {scenario.audio}: {exc.strerror or exc}") from None
    return data, decode_audio(data, max_seconds=3600, min_seconds=0.0).duration_s


def prepare_input(scenario: Scenario, engine: str) -> PreparedInput:
    """The request every target gets for this scenario and engine (base64 inputs, no local paths)."""
    try:
        portrait = Path(scenario.portrait).read_bytes()
    except OSError as exc:
        raise AvatarError("invalid_input", f"portrait {scenario.portrait}: {exc.strerror or exc}") from None
    payload = {"image_b64": base64.b64encode(portrait).decode("ascii"), "engine": engine, **scenario.request}
    if scenario.text is not None:
        payload.update(text=scenario.text, language=scenario.language or "en")
        return PreparedInput(payload, None)
    audio, seconds = _audio_bytes(scenario)
    payload["audio_b64"] = base64.b64encode(audio).decode("ascii")
    if scenario.language:
        payload.setdefault("language", scenario.language)
    return PreparedInput(payload, seconds)
