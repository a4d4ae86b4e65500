"""Handing the finished MP4 to the caller: inline base64, a local path, or a bucket URL."""

from __future__ import annotations

import base64
import shutil
import uuid
from pathlib import Path

from .errors import AvatarError
from .settings import Settings


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
