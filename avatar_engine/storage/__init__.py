"""Object storage for delivering rendered MP4s: GCS (V4 signed URLs) or any S3-compatible bucket.

The pipeline only sees the `ObjectStore` protocol (base.py): `exists` for the content-addressed
cache, `upload` with retries and partial-object cleanup, `link` for a time-limited (or public)
download URL, `delete`, and `read` / `list` for named avatars. gcs.py and s3.py hold the client calls.
"""

from __future__ import annotations

from typing import Any

from avatar_engine.settings import Settings

from .base import (
    DEFAULT_CHUNK,
    MAX_URL_TTL_S,
    RETRYABLE_STATUS,
    BucketStore,
    ObjectStore,
    RetryPolicy,
    StoredObject,
    capped_ttl,
    log,
    object_key,
)
from .gcs import GCS_CHUNK_MULTIPLE, GCSStore, parse_credentials_json
from .s3 import S3_MIN_PART, S3Store, s3_region_from_endpoint

__all__ = [
    "DEFAULT_CHUNK", "GCS_CHUNK_MULTIPLE", "MAX_URL_TTL_S", "RETRYABLE_STATUS", "S3_MIN_PART",
    "BucketStore", "GCSStore", "ObjectStore", "RetryPolicy", "S3Store", "StoredObject",
    "capped_ttl", "make_store", "object_key", "parse_credentials_json", "s3_region_from_endpoint",
]


def make_store(settings: Settings, **kwargs: Any) -> ObjectStore | None:
    """S3 when BUCKET_ENDPOINT_URL is set, GCS when MEDIA_BUCKET is, else None (no bucket).

    Attempts, backoff, retry deadline and request timeouts come from the STORAGE_* settings unless
    given. Credential problems raise AvatarError("upload_failed") with a message that names the
    variable to fix, never its value.
    """
    kwargs.setdefault("max_attempts", settings.storage_max_attempts)
    kwargs.setdefault("retry_deadline_s", settings.storage_retry_deadline_s)
    kwargs.setdefault("backoff_initial", settings.storage_backoff_initial_s)
    kwargs.setdefault("backoff_max", settings.storage_backoff_max_s)
    kwargs.setdefault("timeout", (settings.storage_connect_timeout_s, settings.storage_read_timeout_s))
    if settings.bucket_endpoint_url:
        if not (settings.bucket_name or settings.media_bucket):
            log.warning("BUCKET_ENDPOINT_URL is set but neither BUCKET_NAME nor MEDIA_BUCKET; no bucket delivery")
            return None
        kwargs.setdefault("public_base_url", settings.media_public_base_url)
        kwargs.setdefault("region", settings.bucket_region)
        return S3Store(settings, **kwargs)
    if settings.media_bucket:
        return GCSStore(settings, **kwargs)
    return None
