"""Handing the finished MP4 to the caller: inline base64, a local path, or a bucket URL (captions beside it)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import numpy as np

from ..errors import AvatarError
from ..settings import Settings

log = logging.getLogger(__name__)

_store_lock = threading.Lock()
_stores: dict[int, object] = {}


def get_store(settings: Settings):
    """The bucket client for these settings (created once: clients and credentials are costly)."""
    with _store_lock:
        if id(settings) not in _stores:
            from ..storage import make_store

            _stores[id(settings)] = (settings, make_store(settings))
        return _stores[id(settings)][1]


def inputs_digest(image: np.ndarray, audio_samples: np.ndarray, audio_rate: int, options_digest: str) -> str:
    """Hash of the decoded inputs and the options that change the output (computed once per job)."""
    h = hashlib.sha256()
    for part in (str(image.shape), str(audio_samples.shape), str(audio_rate), options_digest):
        h.update(part.encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(image).tobytes())
    h.update(np.ascontiguousarray(audio_samples).tobytes())
    return h.hexdigest()


def render_key(inputs: str, engine: str, engine_version: str) -> str:
    """Content address of a render: same inputs digest + engine -> same object name."""
    return hashlib.sha256(f"{inputs}\0{engine}\0{engine_version}".encode()).hexdigest() + ".mp4"


def deliver_url(store, mp4: Path | None, key: str, metadata: dict[str, str], *, deadline=None) -> dict:
    """Upload (unless `mp4` is None: a cache hit) and return a fresh link to the object.

    With a `deadline` (serving.deadline.Deadline) the upload's retries stop at the job's time left, and a
    timed-out or cancelled upload leaves no object behind."""
    if mp4 is not None:
        store.upload(mp4, key, content_type="video/mp4", metadata=metadata,
                     cache_control="private, max-age=86400, immutable", deadline=deadline)
    obj = store.link(key) if deadline is None else deadline.call(lambda: store.link(key), stage="deliver")
    out = {"video_url": obj.url, "object_name": obj.name}
    if obj.expires_at is not None:
        out["expires_at"] = obj.expires_at.isoformat().replace("+00:00", "Z")
    return out


def resolve_delivery(requested: str, settings: Settings, has_store: bool) -> str:
    """`auto` means the bucket when one is configured, else inline base64."""
    if requested == "auto":
        return "url" if has_store else "base64"
    if requested == "url" and not has_store:
        raise AvatarError(
            "invalid_input",
            "output.delivery is 'url' but no bucket is configured: set MEDIA_BUCKET (GCS) or "
            "BUCKET_ENDPOINT_URL + BUCKET_NAME (S3-compatible), or ask for 'base64'",
        )
    return requested


def deliver_base64(mp4: Path, settings: Settings) -> dict:
    size = mp4.stat().st_size
    if size > settings.max_base64_bytes:
        raise AvatarError(
            "input_too_large",
            f"the MP4 is {size} bytes, over the {settings.max_base64_bytes}-byte inline limit "
            "(MAX_BASE64_BYTES); configure a bucket (MEDIA_BUCKET) to receive a URL instead",
        )
    return {"video_b64": base64.b64encode(mp4.read_bytes()).decode("ascii"), "video_bytes": size}


def deliver_path(mp4: Path, settings: Settings, *, name: str | None = None, exact: str | None = None) -> dict:
    """Move the MP4 into OUTPUT_DIR under `name` (validated basename) or a fresh one.

    `exact` is a full path and comes only from the local CLI, never from a remote request.
    """
    if exact:
        target = Path(exact)
    else:
        target = settings.output_dir / (name or f"{uuid.uuid4().hex}.mp4")
    target.parent.mkdir(parents=True, exist_ok=True)
    size = mp4.stat().st_size
    shutil.move(str(mp4), str(target))
    return {"video_path": str(target.resolve()), "video_bytes": size}


#: result fields that belong to one delivery, not to the render: a cache hit makes its own
_PER_DELIVERY = ("video_url", "object_name", "expires_at", "cached", "captions", "captions_url", "timings_ms",
                 "warnings", "refresh_worker", "video_stream", "video_bytes", "video_b64", "video_path")


def _card_name(key: str) -> str:
    return f"{key.rsplit('.', 1)[0]}.result.json"


def save_result_card(store, key: str, result: dict, *, deadline=None) -> None:
    """Keep what describes the render (engine, chain, encoder, lipsync, sizes...) beside its cached MP4, so
    a cache hit answers with the same fields as the render did. Best effort: a failure only logs."""
    card = {k: v for k, v in result.items() if k not in _PER_DELIVERY}
    try:
        with tempfile.TemporaryDirectory(prefix="avatar-card-") as tmp:
            path = f"{tmp}/card.json"
            with open(path, "w", encoding="utf-8") as f:
                json.dump(card, f)
            store.upload(path, _card_name(key), content_type="application/json", metadata={"kind": "result"},
                         cache_control="private, max-age=86400, immutable", deadline=deadline)
    except Exception:  # noqa: BLE001 - the video is delivered; a later cache hit reports fewer fields
        log.warning("could not store the result card of %s", key, exc_info=True)


def load_result_card(store, key: str) -> dict:
    """The render fields saved by `save_result_card` ({} when there is none, e.g. an older cached object)."""
    try:
        card = json.loads(store.read(_card_name(key), max_bytes=1024 * 1024))
    except FileNotFoundError:
        return {}
    except Exception:  # noqa: BLE001 - a broken card must not fail a cache hit
        log.warning("could not read the result card of %s", key, exc_info=True)
        return {}
    return card if isinstance(card, dict) else {}


def deliver_captions(request, audio, store=None, video_key: str | None = None) -> dict:
    """`captions` (the file's text) and, with a bucket, `captions_url` of the same file beside the MP4."""
    if not request.captions:
        return {}
    from ..speech.captions import CONTENT_TYPES, audio_cues, format_captions

    text = format_captions(audio_cues(audio), request.captions)
    out = {"captions": text}
    if store is not None and video_key:
        name = f"{video_key.rsplit('.', 1)[0]}.{request.captions}"
        with tempfile.TemporaryDirectory(prefix="avatar-captions-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            store.upload(path, name, content_type=f"{CONTENT_TYPES[request.captions]}; charset=utf-8",
                         metadata={"kind": "captions"}, cache_control="private, max-age=86400, immutable")
        out["captions_url"] = store.link(name).url
    return out
