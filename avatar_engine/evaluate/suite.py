"""Scenarios: the default suite that ships with the project, the `--quick` subset, and user suite files.

A scenario is one request the evaluator sends (portrait + speech or text, plus request options) and
what it expects back. The default suite downloads nothing: text goes through the embedded eSpeak voice,
speech comes from `assets/`, silence and background noise are generated (inputs.py). A suite file
(JSON or YAML, docs/EVALUATE.md) adds the user's own portraits, audio and requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AvatarError

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
PORTRAIT = ASSETS / "astronaut_512.png"
SUITE_VERSION = 1

#: (language, short text, medium text): the embedded voice speaks every one of them
TEXTS = (
    ("en", "Hello there. I am a talking head.",
     "Good morning, and welcome to the evaluation. Today we measure how fast the avatar speaks, whether the "
     "lips follow every word, and how natural the face looks while it listens."),
    ("de", "Hallo zusammen. Ich bin ein sprechender Kopf.",
     "Guten Morgen und willkommen zur Auswertung. Heute messen wir, wie schnell der Avatar spricht, ob die "
     "Lippen jedem Wort folgen und wie natürlich das Gesicht wirkt."),
    ("es", "Hola a todos. Soy una cabeza parlante.",
     "Buenos días y bienvenidos a la evaluación. Hoy medimos la rapidez con la que habla el avatar, si los "
     "labios siguen cada palabra y lo natural que parece la cara."),
    ("fr", "Bonjour à tous. Je suis une tête parlante.",
     "Bonjour et bienvenue à cette évaluation. Aujourd'hui, nous mesurons la vitesse de l'avatar, si les "
     "lèvres suivent chaque mot et le naturel du visage."),
    ("ru", "Всем привет. Я говорящая голова.",
     "Доброе утро и добро пожаловать на проверку. Сегодня мы измеряем, как быстро говорит аватар, следуют "
     "ли губы за каждым словом и насколько естественно выглядит лицо."),
    ("cmn", "大家好。我是一个会说话的头像。",
     "早上好，欢迎参加这次评估。今天我们测量头像说话的速度，嘴唇是否跟上每一个字，以及脸看起来有多自然。"),
)


@dataclass
class Scenario:
    """One request of the suite; `audio` is a file path, or a generator spec (inputs.py)."""

    id: str
    title: str
    language: str = "en"
    text: str | None = None
    audio: str | dict | None = None
    portrait: str = str(PORTRAIT)
    request: dict = field(default_factory=dict)  # extra request fields (size, fps, lipsync, engine options...)
    stream: bool = False  # read the job as a live stream and time its first segment
    expect_error: str | None = None  # an error code this scenario should end with (then it counts as passed)
    quick: bool = False
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """What the report records of the scenario (never the input bytes)."""
        out = {"id": self.id, "title": self.title, "language": self.language, "tags": self.tags,
               "stream": self.stream, "input": "text" if self.text is not None else "audio"}
        if self.text is not None:
            out["text"] = self.text
        if self.audio is not None:
            out["audio"] = self.audio if isinstance(self.audio, dict) else Path(self.audio).name
        if self.expect_error:
            out["expect_error"] = self.expect_error
        if self.request:
            out["request"] = self.request
        return out


def _text_scenarios() -> list[Scenario]:
    quick_languages = {"en", "de", "cmn"}
    out = []
    for language, short, medium in TEXTS:
        out.append(Scenario(f"text-{language}-short", f"Text, {language}, short", language, text=short,
                            quick=language in quick_languages, tags=["text", "short"]))
        out.append(Scenario(f"text-{language}-medium", f"Text, {language}, medium", language, text=medium,
                            tags=["text", "medium"]))
    return out


def default_suite() -> list[Scenario]:
    """The shipped suite: text in six languages (short and medium), bundled speech, silence, noise, a
    one-minute clip and a streaming job."""
    speech, short = str(ASSETS / "speech_16k.wav"), str(ASSETS / "short_16k.wav")
    return _text_scenarios() + [
        Scenario("speech-short", "Bundled speech, 2 s", audio=short, quick=True, tags=["audio", "short"]),
        Scenario("speech-medium", "Bundled speech, 6 s", audio=speech, tags=["audio", "medium"]),
        Scenario("silence", "Silence only, 4 s", language="", audio={"silence_s": 4.0}, quick=True,
                 tags=["audio", "silence"]),
        Scenario("speech-noise", "Speech over background noise (10 dB SNR)",
                 audio={"file": speech, "noise_snr_db": 10.0, "noise_seed": 1}, tags=["audio", "noise"]),
        Scenario("speech-long", "Bundled speech looped to 60 s", audio={"file": speech, "loop_to_s": 60.0},
                 tags=["audio", "long"]),
        Scenario("stream", "Streaming output (live segments), 6 s", audio=speech, stream=True, quick=True,
                 tags=["audio", "stream"]),
    ]


def quick_suite() -> list[Scenario]:
    """`--quick`: a few minutes on a CPU, still three languages, silence and streaming."""
    return [s for s in default_suite() if s.quick]


def _resolve(value: Any, base: Path) -> Any:
    """Relative file names in a suite file are relative to the suite file."""
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def scenario_from_dict(raw: dict, base: Path) -> Scenario:
    """One scenario entry of a suite file (docs/EVALUATE.md "Suite file")."""
    known = set(Scenario.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown or "id" not in raw:
        problem = f"unknown keys {sorted(unknown)}" if unknown else "no `id`"
        raise AvatarError("invalid_input", f"suite scenario {raw.get('id', '?')}: {problem}")
    if (raw.get("text") is None) == (raw.get("audio") is None):
        raise AvatarError("invalid_input", f"suite scenario {raw['id']}: give exactly one of `text` or `audio`")
    values = {**raw, "title": raw.get("title", raw["id"])}
    values["portrait"] = _resolve(values.get("portrait", str(PORTRAIT)), base)
    audio = values.get("audio")
    if isinstance(audio, str):
        values["audio"] = _resolve(audio, base)
    elif isinstance(audio, dict) and "file" in audio:
        values["audio"] = {**audio, "file": _resolve(audio["file"], base)}
    return Scenario(**values)


def _parse_suite_text(text: str, path: Path) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # only for YAML suites

        return yaml.safe_load(text)
    return json.loads(text)


def load_suite(path: str | Path, *, quick: bool = False) -> list[Scenario]:
    """A suite file's scenarios, after the shipped suite's unless it says `"include_default": false`."""
    path = Path(path)
    try:
        raw = _parse_suite_text(path.read_text(encoding="utf-8"), path)
    except (OSError, ValueError) as exc:
        raise AvatarError("invalid_input", f"suite file {path}: {exc}") from None
    if isinstance(raw, list):
        raw = {"scenarios": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("scenarios", []), list):
        raise AvatarError("invalid_input", f"suite file {path}: expected an object with a `scenarios` list")
    if int(raw.get("version", SUITE_VERSION)) != SUITE_VERSION:
        raise AvatarError("invalid_input", f"suite file {path}: version {raw['version']} (this evaluator reads 1)")
    own = [scenario_from_dict(item, path.parent) for item in raw.get("scenarios", [])]
    base = (quick_suite() if quick else default_suite()) if raw.get("include_default", True) else []
    scenarios = base + own
    ids = [s.id for s in scenarios]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise AvatarError("invalid_input", f"suite file {path}: duplicate scenario ids {duplicates}")
    return scenarios


def select_suite(path: str | Path | None, *, quick: bool) -> list[Scenario]:
    """What `evaluate` runs: the suite file, or the shipped suite (its quick subset with `--quick`)."""
    if path is not None:
        return load_suite(path, quick=quick)
    return quick_suite() if quick else default_suite()
