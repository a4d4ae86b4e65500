"""Text input: pick a voice, speak the text, and return it as an `AudioClip` that knows its timeline.

Voices: `espeak:<voice>` (or a bare eSpeak voice name, or none: the request's BCP-47 `language`
picks one) is the embedded eSpeak NG (`speech/espeak.py`): many languages, robotic but clear, and
it reports when every phoneme and word starts, so the lips are timed by the synthesizer itself.
`piper:<name>` is a mounted neural voice (`speech/piper.py`), lips from its audio.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_right
from functools import lru_cache
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from ..audio.io import ANALYSIS_RATE, AudioClip
from ..errors import AvatarError
from ..settings import Settings
from .espeak import EVENT_PHONEME, EVENT_WORD, EspeakUnavailable, Synthesis, engine
from .ipa_phones import phone_label
from .phonemes import Phone
from .timeline import SpeechTimeline, Word

log = logging.getLogger(__name__)

_FIND_VOICES = 'list them with {"input": {"action": "list_voices"}}'
# a bare language picks the voice most callers expect when eSpeak has several
_PREFERRED = {"en": "en-us", "zh": "cmn", "pt": "pt-br", "es": "es", "fr": "fr-fr"}


@lru_cache(maxsize=1)
def _espeak_voice_index() -> dict[str, str]:
    """Lower-case language codes, voice names and identifiers -> the name to hand eSpeak."""
    index: dict[str, str] = {}
    for v in engine().voices():
        for lang in v.languages:
            index.setdefault(lang.lower(), lang)
        index.setdefault(v.name.lower(), v.name)
        index.setdefault(v.identifier.lower(), v.identifier)
    return index


@lru_cache(maxsize=1)
def _espeak_voice_files() -> dict[str, str]:
    """Lower-case language code -> the voice file that speaks it. eSpeak loads a voice by its file name, not
    by every language it lists: `fr-fr`, `en-gb`, `pt-pt`, `es-mx`, `zh` are languages of the files `fr`,
    `en`, `pt`, `es-419`, `cmn` and fail by name."""
    files: dict[str, str] = {}
    for v in engine().voices():
        for lang in v.languages:
            files.setdefault(lang.lower(), v.identifier.rsplit("/", 1)[-1])
    return files


def _loadable(name: str) -> str:
    """The eSpeak voice `name` (a language code, a voice name, with an optional `+variant`) as eSpeak loads it."""
    base, sep, variant = name.partition("+")
    return _espeak_voice_files().get(base.lower(), base) + sep + variant


def espeak_voices() -> list[dict]:
    """What `list_voices` reports: every eSpeak voice with its languages."""
    return [{"voice": f"espeak:{v.languages[0] if v.languages else v.identifier}", "name": v.name,
             "languages": list(v.languages)} for v in engine().voices()]


def _espeak_for_language(language: str) -> str:
    tag = language.lower().replace("_", "-")
    index = _espeak_voice_index()
    parts = tag.split("-")
    for n in range(len(parts), 0, -1):  # en-US-x-foo -> en-us-x -> en-us -> en
        candidate = "-".join(parts[:n])
        if n == 1 and candidate in _PREFERRED:
            candidate = _PREFERRED[candidate]
        if candidate in index:
            return index[candidate]
    raise AvatarError("invalid_input", f"no eSpeak voice speaks language {language!r}; give a BCP-47 language "
                                       f"eSpeak knows (en, de, es, ru, hi, el, …) or a voice ({_FIND_VOICES})")


def _espeak_named(name: str) -> str:
    base, _, variant = name.partition("+")  # "en-us+f3": a voice with an eSpeak variant
    found = _espeak_voice_index().get(base.lower())
    if found is None or (variant and not variant.replace("_", "").isalnum()):
        raise AvatarError("invalid_input", f"unknown eSpeak voice {name!r}; use a language code such as "
                                           f"espeak:en-us, espeak:de or espeak:ru ({_FIND_VOICES})")
    return f"{found}+{variant}" if variant else found


def resolve_voice(voice: str | None, language: str) -> tuple[str, str]:
    """(backend, backend voice name): ("espeak", "en-us") or ("piper", "en_US-ljspeech-medium")."""
    if not voice:
        return "espeak", _espeak_for_language(language)
    backend, sep, name = voice.partition(":")
    if not sep:
        backend, name = "espeak", voice
    if backend == "espeak":
        return "espeak", _espeak_named(name)
    if backend == "piper":
        return "piper", name
    raise AvatarError("invalid_input", f"unknown voice kind {backend!r} in {voice!r}; use espeak:<voice> "
                                       f"or piper:<name> ({_FIND_VOICES})")


def timeline_from_events(synth: Synthesis, text: str) -> SpeechTimeline:
    """Phones and words from eSpeak's events: each lasts until the next one starts.

    A word ends with its last spoken phone (trailing pauses excluded), and never after the next
    word starts; one written word read as several (numbers) keeps its first start and last end.
    """
    total = len(synth.pcm)
    phonemes = [e for e in synth.events if e.kind == EVENT_PHONEME]
    phones: list[Phone] = []
    for i, ev in enumerate(phonemes):
        end = phonemes[i + 1].sample if i + 1 < len(phonemes) else total
        if end <= ev.sample:
            continue
        label = phone_label(ev.name)
        if label == "SIL" and 0 < i < len(phonemes) - 1 and \
                phonemes[i - 1].text_position == ev.text_position == phonemes[i + 1].text_position:
            label = "AH"  # inside a word an unnamed phoneme is a transitional schwa, not a pause
        if label is None and phones:  # a modifier of the previous phone: extend it
            phones[-1] = Phone(phones[-1].label, phones[-1].start_s, end / synth.rate)
            continue
        phones.append(Phone(label or "SIL", ev.sample / synth.rate, end / synth.rate))
    next_phone = [total] * (len(synth.events) + 1)  # sample where the phone after event i starts
    for i in range(len(synth.events) - 1, -1, -1):
        nxt = synth.events[i + 1] if i + 1 < len(synth.events) else None
        next_phone[i] = nxt.sample if nxt is not None and nxt.kind == EVENT_PHONEME else next_phone[i + 1]
    spans: list[list] = []  # [text_position, length, start_sample, end_sample]
    current = None
    for i, ev in enumerate(synth.events):
        if ev.kind == EVENT_WORD:
            if spans and ev.text_position < spans[-1][0] + max(spans[-1][1], 1):
                current = spans[-1]  # "123" is read as several words inside one written word
                continue
            current = [ev.text_position, ev.length, ev.sample, ev.sample]
            spans.append(current)
        elif current is not None and ev.name:  # a spoken phone of the current word
            current[3] = max(current[3], next_phone[i])
    return SpeechTimeline(phones=phones, words=_written_words(text, spans, synth.rate), source="synthesizer")


def _written_words(text: str, spans: list[list], rate: int) -> list[Word]:
    """The text's whitespace-separated tokens (punctuation kept) timed by the word events inside them.

    eSpeak may read two written words as one ("I am"): a token without an event of its own joins
    the word before it, so every written word is shown and every time is an event time.
    """
    tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    starts = [t[0] for t in tokens]
    times: dict[int, list[int]] = {}
    for k, (pos, _length, start, end) in enumerate(spans):
        if k + 1 < len(spans):
            end = min(end, spans[k + 1][2])
        i = bisect_right(starts, pos - 1) - 1
        if i < 0 or pos - 1 >= tokens[i][1]:
            continue
        if i in times:
            times[i][1] = max(times[i][1], end)
        else:
            times[i] = [start, max(end, start + 1)]
    words: list[Word] = []
    pending = ""
    for i, (_a, _b, token) in enumerate(tokens):
        if i not in times:
            if words:
                words[-1] = Word(f"{words[-1].text} {token}", words[-1].start_s, words[-1].end_s)
            else:
                pending = f"{pending} {token}".strip()
            continue
        start, end = times[i]
        words.append(Word(f"{pending} {token}".strip(), start / rate, end / rate))
        pending = ""
    return words


def _clip(samples: np.ndarray, rate: int, timeline: SpeechTimeline | None, settings: Settings) -> AudioClip:
    """An AudioClip like `decode_audio` makes: the voice's own rate for output, 16 kHz for analysis."""
    samples = samples.astype(np.float32)
    min_len = int(np.ceil(settings.min_audio_seconds * rate))
    if len(samples) < min_len:
        samples = np.pad(samples, (0, min_len - len(samples)))  # a one-word text still makes a valid clip
    duration = len(samples) / rate
    if duration > settings.max_audio_seconds:
        raise AvatarError("input_too_large", f"the text takes {duration:.0f} s to speak, over the "
                                             f"{settings.max_audio_seconds:.0f} s limit (MAX_AUDIO_SECONDS)")
    g = gcd(ANALYSIS_RATE, rate)
    analysis = resample_poly(samples, ANALYSIS_RATE // g, rate // g).astype(np.float32)  # zero-phase: no delay
    return AudioClip(analysis=analysis, samples=samples[None, :].copy(), rate=rate, duration_s=duration,
                     timeline=timeline)


NO_SPEECH = "the text produced no speech (only punctuation or symbols?)"


def check_text(text: str, settings: Settings) -> None:
    if not text or not text.strip():
        raise AvatarError("invalid_input", "text is empty; give the words to speak")
    if len(text) > settings.max_text_chars:
        raise AvatarError("input_too_large", f"text has {len(text)} characters, over the {settings.max_text_chars} "
                                             "character limit (MAX_TEXT_CHARS); split it into several renders")


def speak(text: str, *, voice: str | None, language: str, settings: Settings) -> AudioClip:
    """The spoken text as an AudioClip; eSpeak clips carry the synthesizer's phone and word timeline.
    Control characters are removed first (eSpeak would stop at a NUL), as the request schema does."""
    from ..schema import CONTROL_CHARS

    text = CONTROL_CHARS.sub("", text) if isinstance(text, str) else text
    check_text(text, settings)
    backend, name = resolve_voice(voice, language)
    if backend == "piper":
        from . import piper

        samples, rate = piper.synthesize(text, name, settings)
        if not np.any(np.abs(samples) > 1e-3):
            raise AvatarError("invalid_input", NO_SPEECH)
        if rate not in (16000, 22050, 24000, 44100, 48000):
            raise AvatarError("engine_unavailable", f"piper voice {name!r} has an unsupported sample rate {rate}")
        return _clip(samples, rate, None, settings)
    try:
        synth = engine().synthesize(text, _loadable(name))
    except EspeakUnavailable as exc:
        raise AvatarError("engine_unavailable", f"the embedded eSpeak voice is unavailable: {exc}") from None
    except ValueError as exc:
        raise AvatarError("invalid_input", f"{exc} ({_FIND_VOICES})") from None
    timeline = timeline_from_events(synth, text) if synth.pcm.size else None
    if timeline is None or all(phone.label == "SIL" for phone in timeline.phones):  # "...": a pause, no words
        raise AvatarError("invalid_input", NO_SPEECH)
    return _clip(synth.pcm.astype(np.float32) / 32768.0, synth.rate, timeline, settings)


def speak_request(request, settings: Settings) -> AudioClip:
    """Pipeline entry: `request.text` spoken with `request.voice` / `request.language`."""
    return speak(request.text, voice=request.voice, language=request.language, settings=settings)
