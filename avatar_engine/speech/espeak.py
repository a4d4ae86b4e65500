"""eSpeak NG through its C API (ctypes), from the `espeakng-loader` wheel: no subprocess, no download.

The wheel bundles libespeak-ng 1.52 and its data (GPL-3.0-or-later, loaded as a shared library).
We run it in AUDIO_OUTPUT_SYNCHRONOUS mode: `espeak_Synth` returns when the whole text is spoken,
having handed every PCM block (22050 Hz, int16 mono) and its events to our callback. Word events
carry the character span of the word; phoneme events (enabled with
espeakINITIALIZE_PHONEME_EVENTS, named in IPA with espeakINITIALIZE_PHONEME_IPA) carry the phoneme.
Both carry `sample`, the absolute sample index where they start, which is what the timeline uses.

eSpeak keeps global state and is not thread-safe: every call holds one process-wide lock. Part of
that state carries over between calls (pitch flutter phase): the same text spoken twice in one
process can differ by a few milliseconds per phoneme, so its samples are not a stable cache key.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
ENDPAUSE = 0x1000
POS_CHARACTER = 1

EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_PHONEME = 7
EVENT_SAMPLERATE = 8

_lock = threading.RLock()


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT (speak_lib.h)."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _Voice(ctypes.Structure):
    """espeak_VOICE (speak_lib.h); `languages` is a run of (priority byte, NUL-terminated name) pairs."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Event:
    kind: int  # EVENT_WORD or EVENT_PHONEME
    sample: int  # absolute sample index at `Engine.rate`
    text_position: int  # 1-based character index of the word in the text
    length: int  # characters of the word (word events)
    name: str  # IPA phoneme name (phoneme events; "" for pauses)


@dataclass(frozen=True)
class VoiceInfo:
    name: str  # e.g. "English_(America)"
    identifier: str  # file under espeak-ng-data/voices, e.g. "gmw/en-US"
    languages: tuple[str, ...]  # e.g. ("en-us", "en")


@dataclass
class Synthesis:
    pcm: np.ndarray  # int16 (n,)
    rate: int
    events: list[Event]


class EspeakUnavailable(RuntimeError):
    pass


class Engine:
    """The loaded library, initialised once per process."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as exc:
            raise EspeakUnavailable("the espeakng-loader package is not installed "
                                    "(pip install espeakng-loader)") from exc
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        options = INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA | INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), options)
        if rate <= 0:
            raise EspeakUnavailable(f"espeak_Initialize failed ({rate}) with data at {espeakng_loader.get_data_path()}")
        self.lib, self.rate = lib, rate
        self._pcm: list[bytes] = []
        self._events: list[Event] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._pcm.append(ctypes.string_at(wav, n_samples * 2))
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type in (EVENT_WORD, EVENT_PHONEME):
                name = ""
                if ev.type == EVENT_PHONEME:  # up to 8 UTF-8 bytes, NUL-terminated unless all 8 are used
                    name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append(Event(ev.type, ev.sample, ev.text_position, ev.length, name))
            i += 1
        return 0  # 0 = continue synthesis

    def voices(self) -> list[VoiceInfo]:
        with _lock:
            arr = self.lib.espeak_ListVoices(None)
            out, i = [], 0
            while arr[i]:
                v = arr[i].contents
                out.append(VoiceInfo(v.name.decode(), v.identifier.decode(), _languages(v.languages)))
                i += 1
        return out

    def synthesize(self, text: str, voice: str) -> Synthesis:
        """Speak `text` with eSpeak voice `voice` (a name espeak_SetVoiceByName accepts)."""
        data = text.encode("utf-8") + b"\0"
        with _lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak could not load voice {voice!r}")
            self._pcm, self._events = [], []
            try:
                err = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8 | ENDPAUSE, None, None)
                if err != 0:
                    raise RuntimeError(f"espeak_Synth failed ({err})")
                self.lib.espeak_Synchronize()
                pcm = np.frombuffer(b"".join(self._pcm), dtype="<i2").copy()
                events = self._events
            finally:
                self._pcm, self._events = [], []
        return Synthesis(pcm=pcm, rate=self.rate, events=events)


def _languages(ptr: int | None) -> tuple[str, ...]:
    """Decode espeak_VOICE.languages: (priority byte, name, NUL)* ending with a zero priority."""
    if not ptr:
        return ()
    out, offset = [], 0
    while True:
        priority = ctypes.string_at(ptr + offset, 1)[0]
        if priority == 0:
            return tuple(out)
        name = ctypes.string_at(ptr + offset + 1)
        out.append(name.decode("utf-8", "replace"))
        offset += 2 + len(name)


@lru_cache(maxsize=1)
def engine() -> Engine:
    with _lock:
        return Engine()
