"""Mounted neural voices: Piper (VITS exported to ONNX), chosen with `voice: "piper:<name>"`.

Files: `MODEL_ROOT/voices/<name>.onnx` and `<name>.onnx.json` (the voice's config: sample rate,
eSpeak voice, phoneme-id map, inference scales), exactly as published in the Hugging Face repo
`rhasspy/piper-voices` (e.g. `en_US-ljspeech-medium`, trained on the public-domain LJSpeech set).
Code: rhasspy/piper, MIT (archived in 2025; its successor OHF-Voice/piper1-gpl is GPL-3.0 and is not
used here, only the voice file format). Voice licenses differ per voice (mostly CC0, CC-BY-4.0 or
MIT; some datasets are non-commercial): read the voice's MODEL_CARD before mounting it.

Piper voices read eSpeak IPA, so the bundled eSpeak phonemizes the text; onnxruntime runs the
network (not a dependency of this project: install `onnxruntime` or `onnxruntime-gpu` in the
image that mounts voices). A voice that is named but missing is an error, never a silent eSpeak
fallback. The network gives no phone timings, so lips come from the audio (like recorded speech).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import AvatarError
from ..settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")
_BOS, _EOS, _PAD = "^", "$", "_"
_PHONEMES_IPA = 0x02
_lock = threading.Lock()


def voice_files(name: str, settings: Settings) -> tuple[Path, Path]:
    if not _NAME.match(name) or ".." in name:
        raise AvatarError("invalid_input", f"piper voice name {name!r} must be a file stem like en_US-ljspeech-medium")
    root = settings.model_root / "voices"
    return root / f"{name}.onnx", root / f"{name}.onnx.json"


def available_voices(settings: Settings) -> list[str]:
    root = settings.model_root / "voices"
    if not root.is_dir():
        return []
    return sorted(p.name[: -len(".onnx")] for p in root.glob("*.onnx") if p.with_name(p.name + ".json").is_file())


@dataclass
class PiperVoice:
    session: object  # onnxruntime.InferenceSession
    rate: int
    espeak_voice: str
    id_map: dict[str, list[int]]
    scales: np.ndarray  # float32 [noise_scale, length_scale, noise_w]
    speakers: int


def load_voice(name: str, settings: Settings) -> PiperVoice:
    """The voice's files checked and loaded (cached per file); `engine_unavailable` names what is missing."""
    model, config = voice_files(name, settings)
    for path in (model, config):
        if not path.is_file():
            raise AvatarError("engine_unavailable", f"piper voice {name!r} is not mounted: {path} does not exist "
                                                    f"(put {model.name} and {config.name} from rhasspy/piper-voices "
                                                    f"under {model.parent})")
    if importlib.util.find_spec("onnxruntime") is None:
        raise AvatarError("engine_unavailable", f"piper voice {model} is mounted but onnxruntime is not installed "
                                                "(pip install onnxruntime, or onnxruntime-gpu)")
    return _load(str(model), str(config), model.stat().st_mtime)


@lru_cache(maxsize=4)
def _load(model: str, config: str, _mtime: float) -> PiperVoice:
    import onnxruntime

    try:
        cfg = json.loads(Path(config).read_text(encoding="utf-8"))
        inference = cfg.get("inference", {})
        scales = np.array([inference.get("noise_scale", 0.667), inference.get("length_scale", 1.0),
                           inference.get("noise_w", 0.8)], dtype=np.float32)
        session = onnxruntime.InferenceSession(model, providers=onnxruntime.get_available_providers())
        return PiperVoice(session, int(cfg["audio"]["sample_rate"]), cfg["espeak"]["voice"],
                          cfg["phoneme_id_map"], scales, int(cfg.get("num_speakers", 1)))
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise AvatarError("engine_unavailable", f"piper voice {model} or its config is unusable: {exc}") from None
    except Exception as exc:  # onnxruntime raises its own types for a corrupt model
        raise AvatarError("engine_unavailable",
                          f"piper voice {model} could not be loaded: {type(exc).__name__}") from None


def _phonemize(text: str, espeak_voice: str) -> str:
    """IPA of the whole text, clause by clause (eSpeak's espeak_TextToPhonemes), words space-separated."""
    from .espeak import _lock as espeak_lock
    from .espeak import engine

    eng = engine()
    lib = eng.lib
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    data = ctypes.create_string_buffer(text.encode("utf-8"))
    cursor = ctypes.c_void_p(ctypes.addressof(data))
    clauses = []
    with espeak_lock:
        if lib.espeak_SetVoiceByName(espeak_voice.encode()) != 0:
            raise AvatarError("engine_unavailable",
                              f"the piper voice wants eSpeak voice {espeak_voice!r}, which is missing")
        while cursor.value:
            out = lib.espeak_TextToPhonemes(ctypes.byref(cursor), 1, _PHONEMES_IPA)
            if out:
                clauses.append(out.decode("utf-8", "replace").strip())
    return " ".join(c for c in clauses if c)


def synthesize(text: str, name: str, settings: Settings) -> tuple[np.ndarray, int]:
    """(float32 mono samples, rate) of `text` spoken by mounted voice `name`."""
    voice = load_voice(name, settings)
    ids = list(voice.id_map[_BOS])
    for symbol in _phonemize(text, voice.espeak_voice):
        if symbol in voice.id_map:
            ids += voice.id_map[symbol] + voice.id_map[_PAD]
    ids += voice.id_map[_EOS]
    feeds = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
             "scales": voice.scales}
    if voice.speakers > 1:
        feeds["sid"] = np.array([0], dtype=np.int64)
    with _lock:
        audio = voice.session.run(None, feeds)[0]
    return np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0), voice.rate
