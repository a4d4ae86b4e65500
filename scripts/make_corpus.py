"""Generate tests/corpus/: hostile and edge-case inputs plus `cases.json`, what each job must answer.

Every file is made here from the bundled portrait and synthetic audio, so the corpus is reproducible
and reviewable: `python scripts/make_corpus.py` rewrites it, `--check` only compares (exit 1 on drift).
Encoders run with `bitexact` so library version strings stay out of the bytes.

`cases.json` holds job inputs as templates. A string may contain these tokens, expanded by
`expand()` when the case runs:

  {b64:NAME}         base64 of corpus file NAME
  {url:/route}       the test HostileServer on 127.0.0.1 (the test settings allow loopback)
  {public_url:/route} the same server under the host name PUBLIC_ALIAS, which the test resolves to
                     loopback *as if it were public*; with `allow_private_urls: false` this puts a
                     production-like guard in front of redirects to loopback/private/metadata targets

A case: `name`, `why`, `input` (the template), `expect` (accepted error codes, or "ok" for a render),
optional `settings` (overrides of the test Settings), `budget` ("fast": answers within 2 s;
"fetch": within fetch total + read timeout + margin, for deliberately slow servers), `message` (a
substring the error message must hold, e.g. which redirect hop was refused) and `xfail`
(a known worker bug this case reproduces; the test expects the failure until the fix lands).
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import hashlib
import io
import json
import re
import struct
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
PORTRAIT = REPO / "assets" / "astronaut_512.png"
PUBLIC_ALIAS = "public.corpus.test"
_TOKEN = re.compile(r"\{(b64|url|public_url):([^{}]+)\}")


# --------------------------------------------------------------------------------------
# media makers
# --------------------------------------------------------------------------------------


def _portrait(side: int = 256) -> Image.Image:
    """The bundled astronaut cropped to the head, so the face clears the 64 px minimum at 256 px."""
    return Image.open(PORTRAIT).convert("RGB").crop((112, 16, 368, 272)).resize((side, side), Image.LANCZOS)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _pcm16(samples: np.ndarray) -> bytes:
    """(channels, n) float -> interleaved little-endian PCM16."""
    return (np.clip(samples.T, -1, 1) * 32767).astype("<i2").tobytes()


def _wav(samples: np.ndarray, rate: int, *, declared_frames: int | None = None, format_tag: int = 1) -> bytes:
    """A canonical 44-byte-header WAV; `declared_frames` lets the header lie about the length."""
    channels = samples.shape[0]
    body = _pcm16(samples)
    data_len = (declared_frames if declared_frames is not None else samples.shape[1]) * channels * 2
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * channels * 2, channels * 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + data_len) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_len) + body)


def _tone(seconds: float, rate: int, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * freq * t))[None], channels, axis=0)


def _encode(samples: np.ndarray, rate: int, fmt: str, codec: str, options: dict | None = None) -> bytes:
    """Encode mono samples as 16-bit with PyAV, bit-exact (no encoder version tags)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt, options={"fflags": "+bitexact"}) as c:
        stream = c.add_stream(codec, rate=rate)
        stream.layout = "mono"
        stream.codec_context.options = {"flags": "+bitexact", **(options or {})}
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        step = 60 * rate  # a minute per frame; PyAV re-chunks to the codec's frame size
        for start in range(0, pcm.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, start:start + step]), format="s16",
                                               layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return buf.getvalue()


def _flac_without_length(flac: bytes) -> bytes:
    """Zero STREAMINFO's 36-bit total-sample count and MD5: the decoder learns the length only by
    decoding, so the worker's running duration cap (not the header check) must stop it."""
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0  # first metadata block is STREAMINFO
    out = bytearray(flac)
    info = 8  # 'fLaC' + 4-byte block header
    out[info + 13] &= 0xF0
    out[info + 14:info + 18] = bytes(4)
    out[info + 18:info + 34] = bytes(16)
    return bytes(out)


def _smash(data: bytes, start: int, length: int) -> bytes:
    out = bytearray(data)
    out[start:start + length] = bytes([0x55]) * min(length, len(data) - start)
    return bytes(out)


def make_files() -> dict[str, bytes]:
    """Every corpus file by name. Sizes are kept small: the largest is the 192 kHz clip."""
    rng = np.random.default_rng(20240611)
    face = _portrait()
    png, jpeg = _save(face, "PNG", optimize=True), _save(face, "JPEG", quality=85)
    ok_wav = _wav(_tone(0.5, 16000), 16000)
    mp3 = _encode(_tone(1.0, 22050), 22050, "mp3", "libmp3lame", {"b": "32k"})
    thirty_min = _encode(np.zeros((1, 8000 * 1800)), 8000, "flac", "flac", {"frame_size": "32768", "strict": "-2"})
    sof = jpeg.index(b"\xff\xc0")  # baseline start-of-frame: corrupt the frame header itself
    gif_frames = [face, face.rotate(8), face.rotate(-8)]
    idat = png.index(b"IDAT")

    return {
        # --- images ---------------------------------------------------------------------------
        "portrait.png": png,
        "portrait.jpg": jpeg,
        "empty.bin": b"",
        "png-signature-only.png": png[:8],
        "png-truncated.png": png[: len(png) * 2 // 5],
        "png-corrupt-idat.png": _smash(png, idat + 400, 256),
        "jpeg-signature-only.jpg": b"\xff\xd8\xff",
        "jpeg-truncated.jpg": jpeg[: len(jpeg) // 2],
        "jpeg-corrupt-sof.jpg": _smash(jpeg, sof + 4, 8),
        "image-1x1.png": _save(Image.new("RGB", (1, 1), (200, 150, 120)), "PNG"),
        "image-bomb-20000.png": _save(Image.new("1", (20000, 20000)), "PNG", optimize=True),
        "image-animated.gif": _save(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:],
                                    duration=120, loop=0),
        "image-no-face.png": _save(Image.new("RGB", (256, 256), (128, 128, 128)), "PNG"),
        "image.svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256">'
                      b'<circle cx="128" cy="128" r="100" fill="tan"/></svg>\n'),
        "heic-named-as.png": (struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic"
                              + struct.pack(">I", 16) + b"meta" + bytes(8)),
        "text.txt": b"Hello! I am plain text pretending to be a portrait or a speech recording.\n",
        # --- audio ----------------------------------------------------------------------------
        "speech-0.5s.wav": ok_wav,
        "wav-zero-seconds.wav": _wav(np.zeros((1, 0)), 16000),
        "wav-0.1s.wav": _wav(_tone(0.1, 16000), 16000),
        "wav-header-says-30min.wav": _wav(_tone(0.5, 16000), 16000, declared_frames=16000 * 1800),
        "flac-30min-silence.flac": thirty_min,
        "flac-30min-no-length.flac": _flac_without_length(thirty_min),
        "wav-silence.wav": _wav(np.zeros((1, 8000)), 16000),
        "wav-noise.wav": _wav(rng.uniform(-0.9, 0.9, (1, 8000)), 16000),
        "wav-8ch.wav": _wav(_tone(0.4, 8000, channels=8), 8000),
        "wav-192khz.wav": _wav(_tone(0.25, 192000), 192000),
        "wav-truncated-header.wav": ok_wav[:30],
        "wav-truncated-body.wav": _wav(_tone(1.0, 16000), 16000)[: 44 + 16000],  # says 1 s, holds 0.5 s
        "wav-corrupt-format.wav": _wav(_tone(0.5, 16000), 16000, format_tag=0x7A7A),
        "wav-8mhz-1ms.wav": _wav(np.full((1, 8000), 0.1), 8_470_144),
        "wav-rate-2g.wav": _wav(np.full((1, 8000), 0.1), 2**31 - 1),
        "mp3-1s.mp3": mp3,
        "mp3-truncated.mp3": mp3[: len(mp3) * 2 // 3],
        "mp3-corrupt.mp3": mp3[:10] + bytes(rng.integers(0, 256, 600, dtype=np.uint8)),
    }


# --------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------

IMG = "{b64:portrait.jpg}"
AUD = "{b64:speech-0.5s.wav}"
SMALL = {"size": 128}
PROD = {"allow_private_urls": False}  # production policy: only public addresses


def _c(name: str, why: str, inp, expect, **extra) -> dict:
    case = {"name": name, "why": why, "input": inp, "expect": [expect] if isinstance(expect, str) else list(expect)}
    case.update(extra)
    return case


def _img(name: str, why: str, file: str, expect, **extra) -> dict:
    return _c(name, why, {"image_b64": f"{{b64:{file}}}", "audio_b64": AUD, **SMALL}, expect, **extra)


def _aud(name: str, why: str, file: str, expect, **extra) -> dict:
    return _c(name, why, {"image_b64": IMG, "audio_b64": f"{{b64:{file}}}", **SMALL}, expect, **extra)


def _url(name: str, why: str, url: str, expect, **extra) -> dict:
    return _c(name, why, {"image_url": url, "audio_b64": AUD, **SMALL}, expect, **extra)


def _path(name: str) -> dict:
    return {"delivery": "path", "name": f"{name}.mp4"}


def make_cases() -> list[dict]:
    return [
        # --- controls: the corpus's own inputs render --------------------------------------
        _c("ok-jpeg-wav-base64", "control: the shared portrait + clip render inline",
           {"image_b64": IMG, "audio_b64": AUD, **SMALL, "output": {"delivery": "base64"}}, "ok"),
        _c("ok-png-path", "control: path delivery writes exactly one named file",
           {"image_b64": "{b64:portrait.png}", "audio_b64": AUD, **SMALL, "output": _path("ok-png-path")}, "ok"),
        # --- images -------------------------------------------------------------------------
        _img("image-zero-bytes", "an empty base64 string is a missing field", "empty.bin", "invalid_input"),
        _img("png-signature-only", "8-byte PNG signature, no chunks", "png-signature-only.png", "unsupported_media"),
        _img("png-truncated", "PNG cut at 40%", "png-truncated.png", "unsupported_media"),
        _img("png-corrupt-idat", "PNG with smashed compressed pixel data", "png-corrupt-idat.png", "unsupported_media"),
        _img("jpeg-signature-only", "JPEG SOI marker only", "jpeg-signature-only.jpg", "unsupported_media"),
        _img("jpeg-truncated", "JPEG cut in half", "jpeg-truncated.jpg", "unsupported_media"),
        _img("jpeg-corrupt-sof", "JPEG whose frame header (size, components) is garbage", "jpeg-corrupt-sof.jpg",
             "unsupported_media"),
        _img("image-1x1", "a 1x1 PNG is below the 64 px minimum", "image-1x1.png", "invalid_input"),
        _img("image-bomb-20000", "20000x20000 1-bit PNG: ~50 KB that would inflate to 1.2 GB RGB",
             "image-bomb-20000.png", "input_too_large"),
        _c("image-animated-gif", "animated GIF: the first frame is the portrait",
           {"image_b64": "{b64:image-animated.gif}", "audio_b64": AUD, **SMALL,
            "output": _path("image-animated-gif")}, "ok"),
        _img("image-svg", "SVG is never rasterised (no external references, no XML parser)", "image.svg",
             "unsupported_media"),
        _img("image-heic-named-png", "ISO-BMFF ftypheic bytes: sniffed, not trusted by name", "heic-named-as.png",
             "unsupported_media"),
        _img("image-text", "plain text as the image", "text.txt", "unsupported_media"),
        _img("image-is-audio", "a WAV as the image", "speech-0.5s.wav", "unsupported_media"),
        _img("image-no-face", "a flat grey square has no face", "image-no-face.png", "no_face"),
        _c("image-no-face-still", "on_no_face=still renders the portrait held over the audio",
           {"image_b64": "{b64:image-no-face.png}", "audio_b64": AUD, **SMALL, "on_no_face": "still",
            "output": {"delivery": "base64"}}, "ok"),
        # --- audio --------------------------------------------------------------------------
        _aud("audio-zero-bytes", "an empty base64 string is a missing field", "empty.bin", "invalid_input"),
        _aud("audio-zero-seconds", "WAV header with no samples", "wav-zero-seconds.wav",
             ["invalid_input", "unsupported_media"]),
        _aud("audio-0.1s", "0.1 s is below the 0.2 s minimum", "wav-0.1s.wav", "invalid_input"),
        _c("audio-header-says-30min", "WAV header declares 30 min over a 0.5 s body: the body is what plays, "
           "nothing is sized by the header",
           {"image_b64": IMG, "audio_b64": "{b64:wav-header-says-30min.wav}", **SMALL,
            "output": {"delivery": "base64"}}, "ok"),
        _aud("audio-30min", "a real 30 min FLAC (13 KB of silence): refused from its header",
             "flac-30min-silence.flac", "input_too_large"),
        _aud("audio-30min-no-length", "30 min FLAC without a length: the decode loop stops at the cap",
             "flac-30min-no-length.flac", "input_too_large"),
        _c("audio-silence", "digital silence renders (a closed mouth)",
           {"image_b64": IMG, "audio_b64": "{b64:wav-silence.wav}", **SMALL, "output": {"delivery": "base64"}}, "ok"),
        _c("audio-noise", "full-scale white noise renders",
           {"image_b64": IMG, "audio_b64": "{b64:wav-noise.wav}", **SMALL, "output": {"delivery": "base64"}}, "ok"),
        _c("audio-8-channels", "8-channel WAV is downmixed",
           {"image_b64": IMG, "audio_b64": "{b64:wav-8ch.wav}", **SMALL, "output": _path("audio-8-channels")}, "ok"),
        _c("audio-192khz", "192 kHz WAV is resampled to 48 kHz for AAC",
           {"image_b64": IMG, "audio_b64": "{b64:wav-192khz.wav}", **SMALL, "output": {"delivery": "base64"}}, "ok"),
        _aud("wav-truncated-header", "WAV cut inside its header", "wav-truncated-header.wav", "unsupported_media"),
        _c("wav-truncated-body", "WAV promising 1 s, holding 0.5 s: plays what is there",
           {"image_b64": IMG, "audio_b64": "{b64:wav-truncated-body.wav}", **SMALL,
            "output": {"delivery": "base64"}}, "ok"),
        _aud("wav-corrupt-format", "WAV with an unknown codec tag", "wav-corrupt-format.wav", "unsupported_media"),
        _aud("wav-8mhz-1ms", "1 ms at a claimed 8.47 MHz: too short, not a crash", "wav-8mhz-1ms.wav",
             "invalid_input"),
        _aud("wav-rate-2g", "a claimed 2^31-1 Hz sample rate", "wav-rate-2g.wav", "unsupported_media"),
        _c("mp3-ok", "control: a 1 s MP3",
           {"image_b64": IMG, "audio_b64": "{b64:mp3-1s.mp3}", **SMALL, "output": {"delivery": "base64"}}, "ok"),
        _c("mp3-truncated", "MP3 cut at 2/3: the decodable part plays",
           {"image_b64": IMG, "audio_b64": "{b64:mp3-truncated.mp3}", **SMALL, "output": {"delivery": "base64"}}, "ok"),
        _aud("mp3-corrupt", "ID3 header followed by random bytes", "mp3-corrupt.mp3",
             ["unsupported_media", "invalid_input"]),
        _aud("audio-text", "plain text as the audio", "text.txt", "unsupported_media"),
        _aud("audio-is-image", "a PNG as the audio", "portrait.png", "unsupported_media"),
        # --- base64 and data: URIs -----------------------------------------------------------
        _c("b64-not-base64", "characters outside both base64 alphabets", {"image_b64": "%%%%", "audio_b64": AUD},
           "invalid_input"),
        _c("data-uri-ok", "a well-formed data: URI renders",
           {"image_b64": "data:image/jpeg;base64," + IMG, "audio_b64": "data:audio/wav;base64," + AUD, **SMALL,
            "output": {"delivery": "base64"}}, "ok"),
        _c("data-uri-lying-mime", "the declared MIME type is ignored: bytes are sniffed",
           {"image_b64": "data:text/plain;base64," + IMG, "audio_b64": AUD, **SMALL,
            "output": {"delivery": "base64"}}, "ok"),
        _c("data-uri-not-base64", "data: URI without ;base64", {"image_b64": "data:image/png,abcd", "audio_b64": AUD},
           "invalid_input"),
        _c("data-uri-no-comma", "data: URI that never starts its payload",
           {"image_b64": "data:image/png;base64", "audio_b64": AUD}, "invalid_input"),
        _c("data-uri-empty", "data: URI with an empty payload",
           {"image_b64": "data:image/png;base64,", "audio_b64": AUD}, "invalid_input"),
        _c("data-uri-bad-payload", "data: URI whose payload is not base64",
           {"image_b64": "data:image/png;base64,@@@@", "audio_b64": AUD}, "invalid_input"),
        # --- URLs -----------------------------------------------------------------------------
        _c("url-ok", "control: image and audio over loopback HTTP",
           {"image_url": "{url:/image.png}", "audio_b64": AUD, **SMALL, "output": {"delivery": "base64"}}, "ok"),
        _url("url-404", "missing object", "{url:/missing.png}", "fetch_failed"),
        _url("url-500", "server error", "{url:/500}", "fetch_failed"),
        _url("url-redirect-loop", "a redirect to itself, forever", "{url:/loop}", "fetch_failed"),
        _c("url-3-redirects", "three hops is the limit and still renders",
           {"image_url": "{url:/hop/3}", "audio_b64": AUD, **SMALL, "output": {"delivery": "base64"}}, "ok"),
        _url("url-4-redirects", "one hop over the limit", "{url:/hop/4}", "fetch_failed"),
        _url("url-redirect-metadata", "redirect to 169.254.169.254 stays refused even where loopback is allowed",
             "{url:/to-metadata}", "fetch_failed", message="from 169.254.169.254:"),
        _url("url-redirect-file", "redirect to file:///etc/passwd", "{url:/to-file}",
             ["invalid_input", "fetch_failed"]),
        _url("url-html", "HTML served as image/png", "{url:/html}", "unsupported_media"),
        _url("url-empty-body", "200 with no body", "{url:/empty}", "fetch_failed"),
        _url("url-short-body", "Content-Length larger than the body", "{url:/short-body}", "fetch_failed"),
        _url("url-huge-declared", "Content-Length of 10 GB is refused before reading", "{url:/huge-declared}",
             "input_too_large"),
        _c("url-endless-body", "an endless body stops at the byte cap",
           {"image_b64": IMG, "audio_url": "{url:/endless}", **SMALL}, ["input_too_large", "fetch_failed"],
           settings={"max_audio_bytes": 2_000_000}),
        _url("url-slow-drip", "one byte per 0.2 s: the total fetch deadline ends it", "{url:/drip}", "fetch_failed",
             budget="fetch"),
        _url("url-stall", "headers, then silence: the read timeout ends it", "{url:/stall}", "fetch_failed",
             budget="fetch"),
        _url("url-file-scheme", "file:// is never read", "file:///etc/passwd", "invalid_input"),
        _url("url-ftp-scheme", "ftp:// is not fetched", "ftp://127.0.0.1/x.png", "invalid_input"),
        _url("url-gs-scheme", "gs:// is not a fetch scheme (no bucket credentials are lent to callers)",
             "gs://bucket/x.png", "invalid_input"),
        _url("url-credentials", "user:password@ URLs are refused", "http://user:pw@127.0.0.1:9/x.png",
             "invalid_input"),
        _url("url-bad-port", "port out of range", "http://127.0.0.1:99999/x.png", "invalid_input"),
        _url("url-no-host", "no host", "http:///x.png", "invalid_input"),
        # production policy (allow_private_urls false): refused before any connection
        _url("url-loopback-disallowed", "127.0.0.1 itself", "{url:/image.png}", "fetch_failed", settings=PROD),
        _url("url-localhost-disallowed", "localhost resolves to loopback", "http://localhost:9/x.png",
             "fetch_failed", settings=PROD),
        _url("url-metadata-direct", "the cloud metadata address", "http://169.254.169.254/latest/meta-data/",
             "fetch_failed", settings=PROD),
        _url("url-metadata-decimal", "169.254.169.254 spelled as one decimal number", "http://2852039166/",
             "fetch_failed", settings=PROD),
        _url("url-metadata-v4-mapped", "metadata address as an IPv4-mapped IPv6 literal",
             "http://[::ffff:169.254.169.254]/", "fetch_failed", settings=PROD),
        _url("url-private-10", "RFC 1918 10/8", "http://10.1.2.3/x.png", "fetch_failed", settings=PROD),
        _url("url-unspecified", "0.0.0.0 reaches local services on some stacks", "http://0.0.0.0:9/x.png",
             "fetch_failed", settings=PROD),
        _url("url-octal-loopback", "127.0.0.1 in octal", "http://017700000001:9/", "fetch_failed", settings=PROD),
        _c("url-public-alias-ok", "control: the public alias really fetches (so the refusals below mean something)",
           {"image_url": "{public_url:/image.png}", "audio_b64": AUD, **SMALL, "output": {"delivery": "base64"}},
           "ok", settings=PROD),
        _url("url-redirect-to-loopback", "a public host redirecting to 127.0.0.1: each hop is re-checked",
             "{public_url:/to-loopback}", "fetch_failed", settings=PROD, message="from 127.0.0.1:"),
        _url("url-redirect-to-private", "a public host redirecting to 10.1.2.3", "{public_url:/to-private}",
             "fetch_failed", settings=PROD, message="from 10.1.2.3:"),
        _url("url-redirect-to-metadata-prod", "a public host redirecting to the metadata address",
             "{public_url:/to-metadata}", "fetch_failed", settings=PROD, message="from 169.254.169.254:"),
        # --- fields ---------------------------------------------------------------------------
        _c("field-unknown", "unknown keys are rejected, not ignored", {"image_b64": IMG, "audio_b64": AUD, "colour": 1},
           "invalid_input"),
        _c("field-wrong-type-fps", "fps as a word", {"image_b64": IMG, "audio_b64": AUD, "fps": "fast"},
           "invalid_input"),
        _c("field-wrong-type-image", "image_b64 as a number", {"image_b64": 12345, "audio_b64": AUD}, "invalid_input"),
        _c("field-wrong-type-output", "output as a string", {"image_b64": IMG, "audio_b64": AUD, "output": "path"},
           "invalid_input"),
        _c("field-negative-fps", "fps -5", {"image_b64": IMG, "audio_b64": AUD, "fps": -5}, "invalid_input"),
        _c("field-size-1e9", "size 10^9", {"image_b64": IMG, "audio_b64": AUD, "size": 10**9}, "invalid_input"),
        _c("field-seed-negative", "seed -1", {"image_b64": IMG, "audio_b64": AUD, "seed": -1}, "invalid_input"),
        _c("field-face-box-short", "face_box with three numbers", {"image_b64": IMG, "audio_b64": AUD,
                                                                    "face_box": [1, 2, 3]}, "invalid_input"),
        _c("field-language-injection", "language must be a BCP-47 tag",
           {"image_b64": IMG, "audio_b64": AUD, "language": "en; rm -rf /"}, "invalid_input"),
        _c("field-output-name-traversal", "output.name may not leave OUTPUT_DIR",
           {"image_b64": IMG, "audio_b64": AUD, "output": {"delivery": "path", "name": "../../etc/cron.d/x.mp4"}},
           "invalid_input"),
        _c("field-output-url-no-bucket", "delivery=url without a bucket",
           {"image_b64": IMG, "audio_b64": AUD, **SMALL, "output": {"delivery": "url"}}, "invalid_input"),
        _c("field-two-image-sources", "image_url and image_b64 together",
           {"image_b64": IMG, "image_url": "{url:/image.png}", "audio_b64": AUD}, "invalid_input"),
        _c("field-engine-driver-disagree", "engine and its alias driver disagree",
           {"image_b64": IMG, "audio_b64": AUD, "engine": "still", "driver": "parametric"}, "invalid_input"),
        _c("field-engine-missing-weights", "a neural engine that is not installed here",
           {"image_b64": IMG, "audio_b64": AUD, **SMALL, "engine": "wav2lip"}, "engine_unavailable"),
        _c("input-null", "job without an input object", None, "invalid_input"),
        _c("input-list", "input is a list", [IMG, AUD], "invalid_input"),
        _c("input-string", "input is a string", "render please", "invalid_input"),
    ]


# --------------------------------------------------------------------------------------
# manifest I/O, shared by the tests and the soak script
# --------------------------------------------------------------------------------------


def build(out: Path) -> None:
    """Write every file and cases.json into `out` (created; other files there are left alone)."""
    out.mkdir(parents=True, exist_ok=True)
    files = make_files()
    for name, data in files.items():
        (out / name).write_bytes(data)
    cases = make_cases()
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    used = {m.group(2) for c in cases for m in _TOKEN.finditer(json.dumps(c["input"])) if m.group(1) == "b64"}
    assert used <= set(files), f"cases use files that are not generated: {sorted(used - set(files))}"
    manifest = {
        "about": "Generated by scripts/make_corpus.py; see its docstring for the template tokens.",
        "public_alias": PUBLIC_ALIAS,
        "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in sorted(files.items())},
        "cases": cases,
    }
    (out / "cases.json").write_text(json.dumps(manifest, indent=1) + "\n")


def load_manifest(corpus: Path = CORPUS) -> dict:
    return json.loads((corpus / "cases.json").read_text())


def expand(template, corpus: Path = CORPUS, url=None):
    """Fill a case's input template: `{b64:FILE}` from `corpus`, `{url:...}`/`{public_url:...}`
    through `url(route, public)` (required only by cases that use them)."""
    if isinstance(template, dict):
        return {k: expand(v, corpus, url) for k, v in template.items()}
    if isinstance(template, list):
        return [expand(v, corpus, url) for v in template]
    if not isinstance(template, str):
        return template

    def fill(m: re.Match) -> str:
        kind, arg = m.groups()
        if kind == "b64":
            return base64.b64encode((corpus / arg).read_bytes()).decode("ascii")
        if url is None:
            raise LookupError(f"template needs a server URL for {m.group(0)}")
        return url(arg, kind == "public_url")

    return _TOKEN.sub(fill, template)


def needs_server(case: dict) -> bool:
    return any(m.group(1) != "b64" for m in _TOKEN.finditer(json.dumps(case["input"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS)
    parser.add_argument("--check", action="store_true", help="compare a fresh build with --out; write nothing")
    args = parser.parse_args(argv)
    if not args.check:
        build(args.out)
        total = sum(p.stat().st_size for p in args.out.iterdir())
        print(f"wrote {len(list(args.out.iterdir()))} files, {total / 1024:.0f} KiB, into {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        fresh = sorted(p.name for p in Path(tmp).iterdir())
        _, mismatch, errors = filecmp.cmpfiles(tmp, args.out, fresh, shallow=False)
    extra = sorted(set(p.name for p in args.out.iterdir()) - set(fresh))
    for name in mismatch + errors + extra:
        print(f"differs: {name}", file=sys.stderr)
    return 1 if mismatch or errors or extra else 0


if __name__ == "__main__":
    sys.exit(main())
