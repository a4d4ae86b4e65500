"""Property: whatever a caller sends, run_job returns a dict that is a render or `{"error": str}`
with a known code, raises nothing, leaves no job temp dir and never opens a connection.

Bounded and reproducible (derandomized, no example database written into the repo). URL fields
only ever hold values the production guard refuses before connecting, DNS answers only IP literals
and any connection attempt is recorded as a failure.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from avatar_engine.errors import ErrorCode, parse_error
from avatar_engine.media import fetch
from avatar_engine.serving.worker import run_job
from avatar_engine.settings import Settings
from scripts.make_corpus import CORPUS

KNOWN_CODES = set(get_args(ErrorCode))
FUZZ = hsettings(max_examples=200, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

IMAGE = base64.b64encode((CORPUS / "portrait.jpg").read_bytes()).decode()
AUDIO = base64.b64encode((CORPUS / "speech-0.5s.wav").read_bytes()).decode()
VALID = {"image_b64": IMAGE, "audio_b64": AUDIO, "size": 128, "output": {"delivery": "base64"}}
FIELDS = ["image_url", "image_b64", "audio_url", "audio_b64", "engine", "driver", "quality_mode", "fps", "size",
          "seed", "on_no_face", "still", "lipsync", "language", "transcript", "qa", "enhance", "enhance_weight",
          "face_box", "preprocess", "pose_style", "expression_scale", "cache", "output"]
REFUSED_URLS = ["http://127.0.0.1:9/x.png", "https://10.0.0.1/a.wav", "http://169.254.169.254/latest/meta-data/",
                "http://[::1]:9/", "http://[::ffff:169.254.169.254]/", "http://0.0.0.0:9/", "http://2852039166/",
                "http://localhost:9/", "ftp://127.0.0.1/x", "gs://bucket/o", "file:///etc/passwd", "http:///x",
                "http://u:p@127.0.0.1:9/", "http://127.0.0.1:99999/", "javascript:alert(1)", "//127.0.0.1:9/x",
                "http://no-such-host.invalid/x.png", "data:image/png;base64,AAAA"]
ODD_STRINGS = ["", " ", "\x00", "\u202e\u0000evil", "\ud800", "../../etc/passwd", "A" * 5000, "%s%n%x", "{b64:x}",
               "data:", "data:;base64,", "NaN", "1e309", "-1", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "<svg/onload=alert(1)>", "null"]

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
           | st.floats() | st.text(max_size=40) | st.sampled_from(ODD_STRINGS + REFUSED_URLS))
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=12) | st.sampled_from(FIELDS), inner, max_size=5),
                         max_leaves=12)


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    """Production guard settings in a private temp root; DNS limited to IP literals; connections
    recorded (none may happen)."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "work").mkdir()
    settings = Settings(allow_private_urls=False, fetch_connect_timeout_s=1.0, fetch_read_timeout_s=1.0,
                        fetch_total_timeout_s=1.5, output_dir=root / "out", work_dir=root / "work",
                        model_root=root / "no-models", media_bucket=None, bucket_endpoint_url=None)
    connections: list[tuple] = []
    real_getaddrinfo = socket.getaddrinfo

    def literal_only(host, port, *args, **kwargs):
        return real_getaddrinfo(host, port, *args, **{**kwargs, "flags": socket.AI_NUMERICHOST})

    def no_pool(scheme, host, ip, port, settings):
        connections.append((scheme, host, ip, port))
        raise AssertionError("the fuzz must never connect anywhere")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fetch.socket, "getaddrinfo", literal_only)
        mp.setattr(fetch, "_pool", no_pool)
        yield settings, connections


def check(result, settings: Settings, connections: list) -> dict | None:
    """The contract for any job; returns the parsed error (None for a render)."""
    assert isinstance(result, dict)
    assert not connections, connections
    assert os.listdir(settings.work_dir) == [], "job temp dir left behind"
    if "error" not in result:
        assert result["frames"] > 0 and ("video_b64" in result or "video_path" in result), result
        return None
    assert set(result) <= {"error", "refresh_worker"}, result
    assert isinstance(result["error"], str)
    body = json.loads(result["error"])  # a JSON object, not a bare string parse_error would wrap
    error = parse_error(result["error"])
    assert body == error and error["code"] in KNOWN_CODES and isinstance(error["message"], str), error
    assert error["code"] != "internal", f"unexpected internal error: {error}"
    return error


@FUZZ
@given(job=json_like | st.fixed_dictionaries({}, optional={"id": json_like, "input": json_like}))
def test_arbitrary_jobs(fuzz_env, job):
    settings, connections = fuzz_env
    check(run_job(job, settings=settings), settings, connections)


_mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(FIELDS) | st.text(max_size=12), json_like),
    st.tuples(st.just("set"), st.sampled_from(["image_url", "audio_url"]), st.sampled_from(REFUSED_URLS)),
    st.tuples(st.just("set"), st.sampled_from(["fps", "size", "seed", "pose_style"]),
              st.integers(min_value=-(2**70), max_value=2**70)),
    st.tuples(st.just("set"), st.sampled_from(["enhance_weight", "expression_scale"]), st.floats()),
    st.tuples(st.just("delete"), st.sampled_from(sorted(VALID)), st.none()),
    st.tuples(st.just("output"), st.sampled_from(["delivery", "name", "extra"]), json_like),
)


@FUZZ
@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_valid_payload(fuzz_env, mutations):
    """A valid request with a few fields changed: field problems are invalid_input (or the
    engine/ media code they imply), never an internal error."""
    settings, connections = fuzz_env
    payload = json.loads(json.dumps(VALID))
    for op, key, value in mutations:
        if op == "set":
            payload[key] = value
        elif op == "delete":
            payload.pop(key, None)
        elif isinstance(payload.get("output"), dict):
            payload["output"][key] = value
    check(run_job({"id": "fuzz", "input": payload}, settings=settings), settings, connections)


MEDIA = {name: (CORPUS / name).read_bytes() for name in ("portrait.png", "portrait.jpg", "image-animated.gif",
                                                         "speech-0.5s.wav", "mp3-1s.mp3", "flac-30min-silence.flac")}


@hsettings(FUZZ, max_examples=150)
@given(name=st.sampled_from(sorted(MEDIA)), edits=st.lists(
    st.tuples(st.integers(min_value=0, max_value=63) | st.integers(min_value=0, max_value=511),
              st.integers(min_value=0, max_value=255)), min_size=1, max_size=8),
    cut=st.none() | st.integers(min_value=0, max_value=4096))
def test_mutated_media_headers(fuzz_env, name, edits, cut):
    """Bytes flipped in the first 512 bytes (where headers, sizes and rates live), optionally cut
    short: the decoders turn every outcome into a media code, never an internal error."""
    settings, connections = fuzz_env
    data = bytearray(MEDIA[name])
    for pos, value in edits:
        data[pos % len(data)] = value
    data = bytes(data if cut is None else data[:cut])
    is_audio = Path(name).suffix in (".wav", ".mp3", ".flac")
    payload = {**VALID, ("audio_b64" if is_audio else "image_b64"): base64.b64encode(data).decode()}
    check(run_job({"id": "fuzz-media", "input": payload}, settings=settings), settings, connections)
