"""The request contract (`job["input"]`): validated once, so every stage can trust its fields."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import AvatarError

#: C0 controls but tab/newline/CR, DEL and C1: eSpeak stops at a NUL and captions must not carry ESC/BEL
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

EngineName = Literal["auto", "parametric", "still", "wav2lip", "sadtalker", "fomm", "diff2lip", "musetalk"]
QualityMode = Literal["auto", "real_time", "high_quality"]


class OutputOptions(BaseModel):
    """Where the MP4 goes: `auto` = bucket if configured, else inline base64 under a size cap."""

    model_config = ConfigDict(extra="forbid")

    delivery: Literal["auto", "url", "base64", "path"] = "auto"
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}\.mp4$",
        description="file name for delivery=path, inside OUTPUT_DIR (no directories)",
    )


class Wav2LipOptions(BaseModel):
    """Options only the Wav2Lip engine reads (`{"wav2lip": {...}}`, or the flat `face_box`)."""

    model_config = ConfigDict(extra="forbid")

    face_box: tuple[int, int, int, int] | None = Field(
        None, description="Wav2Lip face box override in output pixels: [top, bottom, left, right]")


class SadTalkerOptions(BaseModel):
    """Options only the SadTalker engine reads (`{"sadtalker": {...}}`, or the flat names)."""

    model_config = ConfigDict(extra="forbid")

    preprocess: Literal["crop", "full"] = Field("crop", description="SadTalker: animate a face crop or the full image")
    pose_style: int = Field(0, ge=0, le=45, description="SadTalker head-pose style")
    expression_scale: float = Field(1.0, ge=0.0, le=3.0, description="SadTalker expression strength")
    lip_refine: bool = Field(False, description="SadTalker: repaint the lips with a lip stage (`lips`)")
    lips: Literal["auto", "musetalk", "wav2lip"] = Field(
        "auto", description="SadTalker lip_refine stage; auto = MuseTalk on a GPU, else Wav2Lip, else what can run")


class FommOptions(BaseModel):
    """Options only the FOMM engine reads (`{"fomm": {...}}`), for a `reference_video_*` driving video."""

    model_config = ConfigDict(extra="forbid")

    relative: bool = Field(True, description="FOMM: move the portrait's keypoints by the driving video's change "
                                             "from its first frame (false: take the driving keypoints as they are)")
    adapt_scale: bool = Field(True, description="FOMM: scale the driving motion by the ratio of the two faces' sizes")
    lips: Literal["auto", "diff2lip", "musetalk", "wav2lip", "parametric"] = Field(
        "auto", description="FOMM: the lip stage; auto = the first wired one that can run here")


class Diff2LipOptions(BaseModel):
    """Options only the Diff2Lip lip stage reads (`{"diff2lip": {...}}`); its noise seed is the request's `seed`."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(25, ge=2, le=1000, description="Diff2Lip: DDIM sampling steps (upstream ddim25); fewer are "
                                                      "faster and rougher")

    @field_validator("steps")
    @classmethod
    def _respaceable(cls, steps: int) -> int:
        from .engines.diff2lip.sampler import ddim_timesteps

        try:
            ddim_timesteps(1000, steps)
        except ValueError as exc:
            raise ValueError(f"{exc}; try a nearby count (e.g. 25, 50, 100)") from None
        return steps


class MuseTalkOptions(BaseModel):
    """Options only the MuseTalk lip stage reads (`{"musetalk": {...}}`); its noise seed is the request's `seed`."""

    model_config = ConfigDict(extra="forbid")

    bbox_shift: int = Field(0, ge=-40, le=40, description="MuseTalk: move the crop's mid-face line down (+) or up "
                                                          "(-) in pixels; upstream's v1 option (v1.5 uses 0)")
    extra_margin: int = Field(10, ge=0, le=40, description="MuseTalk: pixels added below the chin to the crop "
                                                           "(upstream's v1.5 default 10)")


# Flat request keys kept as aliases of the per-engine options (older callers send them at the top level).
ENGINE_OPTION_ALIASES = {"face_box": "wav2lip", "preprocess": "sadtalker", "pose_style": "sadtalker",
                         "expression_scale": "sadtalker", "lip_refine": "sadtalker"}


class RenderRequest(BaseModel):
    """One render: a portrait, a speech recording and options. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)

    image_url: str | None = Field(None, max_length=4096)
    image_b64: str | None = None
    avatar_id: str | None = Field(None, max_length=128, description="a named avatar (AVATARS_DIR / AVATARS_PREFIX)")
    audio_url: str | None = Field(None, max_length=4096)
    audio_b64: str | None = None
    reference_video_url: str | None = Field(None, max_length=4096, description="FOMM driving video (http(s) URL)")
    reference_video_b64: str | None = Field(None, description="FOMM driving video, base64")
    engine: EngineName = Field("auto", validation_alias=AliasChoices("engine", "driver"),
                               description="auto = the best engine that can run")
    quality_mode: QualityMode = Field("auto", description="real_time or high_quality (high_quality also restores "
                                                          "faces when GFPGAN is mounted); auto picks by the hardware")
    fps: int = Field(25, ge=10, le=60, description="output frames per second")
    size: int = Field(512, ge=64, le=1024, description="output long side in pixels")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="blinks and head motion are deterministic for a seed")
    on_no_face: Literal["error", "still"] = "error"
    still: bool = Field(False, description="no head motion")
    lipsync: Literal["auto", "phonemes", "signal"] = "auto"
    language: str = Field("en", pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$",
                          description="BCP-47 language of the speech; phoneme lip-sync is used for English")
    transcript: str | None = Field(None, max_length=20000,
                                   description="what is said (better lip-sync for English)")
    text: str | None = Field(None, min_length=1, max_length=100_000,
                             description="words to speak instead of audio (plain text, SSML is not interpreted; "
                                         "MAX_TEXT_CHARS caps it)")
    voice: str | None = Field(None, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+/()-]*$",
                              description="for text: espeak:<voice> (default: from language) or piper:<name>")
    captions: Literal["srt", "vtt"] | None = Field(None, description="return a caption file from the word timings")
    captions_burn: bool = Field(False, description="draw the captions onto the frames")
    qa: bool = Field(False, description="run the A/V sync self-check and report it")
    enhance: bool = Field(False, description="restore the face with GFPGAN (needs its checkpoint)")
    enhance_weight: float = Field(1.0, ge=0.0, le=1.0, description="0 = original face, 1 = fully restored")
    wav2lip: Wav2LipOptions = Field(default_factory=lambda: Wav2LipOptions())
    sadtalker: SadTalkerOptions = Field(default_factory=lambda: SadTalkerOptions())
    fomm: FommOptions = Field(default_factory=lambda: FommOptions())
    diff2lip: Diff2LipOptions = Field(default_factory=lambda: Diff2LipOptions())
    musetalk: MuseTalkOptions = Field(default_factory=lambda: MuseTalkOptions())
    cache: bool = True
    output: OutputOptions = Field(default_factory=OutputOptions)

    @field_validator("text", "transcript")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        """Control characters are removed once, here, so the voice and the captions read the same words."""
        if value is None:
            return value
        cleaned = CONTROL_CHARS.sub("", value).strip()
        if not cleaned:
            raise ValueError("has no words once control characters are removed; give the words to speak")
        return cleaned

    @model_validator(mode="before")
    @classmethod
    def _flat_engine_options(cls, data):
        # `{"pose_style": 3}` means `{"sadtalker": {"pose_style": 3}}`; both at once must agree.
        if not isinstance(data, dict) or not any(k in data for k in ENGINE_OPTION_ALIASES):
            return data
        data = dict(data)
        for key, group in ENGINE_OPTION_ALIASES.items():
            if key not in data:
                continue
            value = data.pop(key)
            nested = data.get(group)
            nested = dict(nested) if isinstance(nested, dict) else ({} if nested is None else nested)
            if not isinstance(nested, dict):
                raise ValueError(f"'{group}' must be an object")
            if key in nested and nested[key] != value:
                raise ValueError(f"give '{key}' either at the top level or in '{group}', not two different values")
            nested[key] = value
            data[group] = nested
        return data

    @model_validator(mode="before")
    @classmethod
    def _engine_alias(cls, data):
        # `engine` and its alias `driver` are both accepted; both at once must agree.
        if isinstance(data, dict) and "engine" in data and "driver" in data:
            if data["engine"] != data["driver"]:
                raise ValueError("give either 'engine' or 'driver', not two different values")
            data = {k: v for k, v in data.items() if k != "driver"}
        return data

    @model_validator(mode="after")
    def _one_source_each(self, info: ValidationInfo):
        if info.context and info.context.get("local"):
            return self  # the CLI supplies file bytes itself
        if self.avatar_id is not None:
            from .media.avatars import check_avatar_id

            try:
                check_avatar_id(self.avatar_id)
            except AvatarError as exc:
                raise ValueError(exc.message) from None
        for kind, names in (("image", ("image_url", "image_b64", "avatar_id")),
                            ("audio", ("audio_url", "audio_b64", "text"))):
            given = [n for n in names if getattr(self, n)]
            if len(given) != 1:
                raise ValueError(
                    f"give exactly one of {' or '.join(names)} (got {', '.join(given) or 'neither'})"
                )
        for name in ("reference_video_url", "reference_video_b64"):
            if getattr(self, name) == "":
                raise ValueError(f"{name} is empty; leave it out, or send the driving video")
        if self.reference_video_url and self.reference_video_b64:
            raise ValueError("give reference_video_url or reference_video_b64, not both")
        if (self.reference_video_url or self.reference_video_b64) and self.engine not in ("fomm", "auto"):
            raise ValueError(f"a reference video drives the 'fomm' engine only (engine is '{self.engine}')")
        return self._text_options()

    def _text_options(self):
        # what the text-input options need: a voice speaks text, captions need the words
        if self.voice is not None and self.text is None:
            raise ValueError("voice applies to text input only; give text, or leave voice out")
        if (self.captions or self.captions_burn) and self.text is None and not self.transcript:
            raise ValueError("captions need the words: give text, or a transcript with the audio")
        return self

    def options_digest(self) -> str:
        """Hash of the options that change the output (inputs hashed separately, by content)."""
        opts = self.model_dump(exclude={"image_url", "image_b64", "avatar_id", "audio_url", "audio_b64", "output",
                                        "cache", "qa", "reference_video_url", "reference_video_b64"})
        return hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()


def describe_problems(exc: ValidationError) -> list[str]:
    """One line per failed rule, naming the field but never echoing the value (it may be base64 or a token)."""
    return [_describe(e) for e in exc.errors(include_url=False)]


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = err.get("msg", "invalid")
    if err.get("type") == "extra_forbidden":
        return f"unknown field '{loc}'"
    msg = msg.removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def parse_request(payload, *, local: bool = False, settings=None) -> RenderRequest:
    """Validate `job["input"]`; every problem becomes one `invalid_input` error listing all fields.

    `local=True` (CLI only) skips the image/audio source fields, which the CLI fills from files. A request
    without `quality_mode` gets the deployment's DEFAULT_QUALITY_MODE (`settings`, else the process's) here,
    once: every later step reads the mode from the request.
    """
    if not isinstance(payload, dict):
        raise AvatarError("invalid_input", f"input must be a JSON object, got {type(payload).__name__}")
    try:
        request = RenderRequest.model_validate(payload, context={"local": local})
    except ValidationError as exc:
        problems = describe_problems(exc)
        raise AvatarError("invalid_input", "; ".join(problems), details={"fields": problems}) from None
    if "quality_mode" not in request.model_fields_set:
        from .settings import get_settings

        default = (settings or get_settings()).default_quality_mode
        if default != "auto":
            request = request.model_copy(update={"quality_mode": default})
    return request
