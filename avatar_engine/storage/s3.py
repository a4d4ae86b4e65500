"""S3-compatible buckets (Cloudflare R2, AWS S3, MinIO, Backblaze ...) through boto3, with Runpod's
BUCKET_* variable names. Only the client calls live here; retries, cleanup and the deadline are
`BucketStore`'s (botocore's own retries are off so that one policy rules)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlparse

from avatar_engine.errors import AvatarError
from avatar_engine.settings import Settings

from . import base
from .base import DEFAULT_CHUNK, RETRYABLE_STATUS, BucketStore, RetryPolicy, capped_ttl

#: S3 multipart parts (except the last) must be at least 5 MiB.
S3_MIN_PART = 5 * 1024 * 1024

_S3_RETRYABLE_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException"}
)
_S3_MISSING_CODES = ("404", "NoSuchKey", "NotFound")


def _s3_retryable(exc: BaseException) -> bool:
    """Same policy as GCS; boto3's upload wrapper hides the ClientError in __context__."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, S3UploadFailedError):
        inner = exc.__cause__ or exc.__context__
        return inner is not None and _s3_retryable(inner)
    if isinstance(exc, (BotoConnectionError, HTTPClientError)) or isinstance(exc, base.network_error_types()):
        return True
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return base.status_of(exc) in RETRYABLE_STATUS or code in _S3_RETRYABLE_CODES
    return False


def _s3_status(exc: BaseException) -> int | None:
    from boto3.exceptions import S3UploadFailedError

    if isinstance(exc, S3UploadFailedError):
        inner = exc.__cause__ or exc.__context__
        return base.status_of(inner) if inner is not None else None
    return base.status_of(exc)


def s3_region_from_endpoint(endpoint_url: str) -> str:
    """Region for SigV4, as Runpod's rp_upload derives it; R2 wants 'auto'."""
    host = urlparse(endpoint_url).hostname or ""
    if ".s3." in f".{host}":
        part = f".{host}".split(".s3.", 1)[1].split(".")[0]
        if part and part != "amazonaws":
            return part
    if host.endswith(".digitaloceanspaces.com"):
        return host.split(".")[-3]
    if host.endswith(".r2.cloudflarestorage.com"):
        return "auto"
    return "us-east-1"


class S3Store(BucketStore):
    """S3-compatible bucket via boto3 (BUCKET_ENDPOINT_URL / BUCKET_ACCESS_KEY_ID /
    BUCKET_SECRET_ACCESS_KEY, bucket from BUCKET_NAME or MEDIA_BUCKET); presigned GET URLs.

    Request timeouts are the client's (fixed when it is built); a job deadline still bounds an
    upload because `BucketStore.upload` stops waiting for a stalled attempt.
    """

    provider = "S3"

    def __init__(
        self,
        settings: Settings,
        client: Any | None = None,
        *,
        public_base_url: str | None = None,
        region: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        **retry: Any,
    ):
        """`retry`: max_attempts, backoff_initial, backoff_max, retry_deadline_s, timeout (RetryPolicy.build)."""
        bucket = (settings.bucket_name or settings.media_bucket or "").strip()
        if bucket.startswith("s3://"):
            bucket = bucket[5:]
        bucket = bucket.strip("/")
        if not bucket:
            raise ValueError("S3Store needs BUCKET_NAME (or MEDIA_BUCKET)")
        self.bucket_name = bucket
        self.prefix = settings.media_prefix or ""
        self.ttl = capped_ttl(settings.gcs_signed_url_ttl)
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.chunk_size = max(int(chunk_size), S3_MIN_PART)
        self.endpoint = settings.bucket_endpoint_url
        self.policy = RetryPolicy.build(**retry)
        if client is None:
            import boto3
            from botocore.config import Config

            if bool(settings.bucket_access_key_id) != bool(settings.bucket_secret_access_key):
                raise AvatarError(
                    "upload_failed", "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY must be set together"
                )

            client = boto3.session.Session().client(
                "s3",
                endpoint_url=settings.bucket_endpoint_url,
                aws_access_key_id=settings.bucket_access_key_id,
                aws_secret_access_key=base.secret(settings.bucket_secret_access_key),
                region_name=region or s3_region_from_endpoint(settings.bucket_endpoint_url or ""),
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=self.policy.connect_timeout_s,
                    read_timeout=self.policy.read_timeout_s,
                ),
            )
        self._client = client

    # -- primitives --------------------------------------------------------------------

    def _retryable(self, exc: BaseException) -> bool:
        return _s3_retryable(exc)

    def _status(self, exc: BaseException) -> int | None:
        return _s3_status(exc)

    def _is_missing(self, exc: BaseException) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(exc, ClientError) and (
            base.status_of(exc) == 404 or exc.response.get("Error", {}).get("Code") in _S3_MISSING_CODES)

    def _head(self, key: str, timeout: tuple[float, float]) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket_name, Key=key)
            return True
        except Exception as exc:
            if self._is_missing(exc):
                return False
            raise

    def _put(self, local_path: str, key: str, *, content_type: str, metadata: dict[str, str] | None,
             cache_control: str | None, timeout: tuple[float, float]) -> None:
        """boto3 managed transfer: multipart above chunk_size (boto3 aborts a failed multipart itself)."""
        from boto3.s3.transfer import TransferConfig

        extra: dict[str, Any] = {"ContentType": content_type}
        if metadata:
            extra["Metadata"] = dict(metadata)
        if cache_control:
            extra["CacheControl"] = cache_control
        config = TransferConfig(multipart_threshold=self.chunk_size, multipart_chunksize=self.chunk_size,
                                max_concurrency=2, use_threads=True)
        self._client.upload_file(local_path, self.bucket_name, key, ExtraArgs=extra, Config=config)

    def _remove(self, key: str, timeout: tuple[float, float]) -> None:
        """S3 DELETE of a missing key succeeds."""
        self._client.delete_object(Bucket=self.bucket_name, Key=key)

    def _get(self, key: str, max_bytes: int | None, timeout: tuple[float, float]) -> bytes:
        if max_bytes is not None:
            size = int(self._client.head_object(Bucket=self.bucket_name, Key=key)["ContentLength"])
            if size > max_bytes:
                raise AvatarError("input_too_large", f"{key} is {size} bytes, over the {max_bytes}-byte limit")
        return self._client.get_object(Bucket=self.bucket_name, Key=key)["Body"].read()

    def _list(self, key_prefix: str, timeout: tuple[float, float]) -> list[tuple[str, int]]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket_name, Prefix=key_prefix, Delimiter="/")
        return [(o["Key"], int(o["Size"])) for page in pages for o in page.get("Contents", [])]

    def cors_rules(self, timeout: tuple[float, float] = (3.0, 5.0)) -> list[dict[str, list[str]]]:
        """The bucket's CORS rules as `[{"origins": [...], "methods": [...]}]` ([] when none is set); raises
        when they cannot be read (needs s3:GetBucketCORS; R2 tokens with admin read)."""
        from botocore.exceptions import ClientError

        try:
            answer = self._client.get_bucket_cors(Bucket=self.bucket_name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchCORSConfiguration":
                return []
            raise
        return [{"origins": list(rule.get("AllowedOrigins") or []),
                 "methods": [m.upper() for m in rule.get("AllowedMethods") or []]}
                for rule in answer.get("CORSRules") or []]

    def _public_url(self, key: str) -> str | None:
        return f"{self.public_base_url}/{quote(key, safe='/~')}" if self.public_base_url else None

    def _signed_url(self, key: str) -> tuple[str, datetime]:
        """Presigned GET (TTL from GCS_SIGNED_URL_TTL, capped at 7 days)."""
        url = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket_name, "Key": key}, ExpiresIn=self.ttl)
        return url, datetime.now(timezone.utc) + timedelta(seconds=self.ttl)

    def __repr__(self) -> str:
        host = urlparse(self.endpoint or "").hostname or "default"
        mode = "public" if self.public_base_url else f"presigned ttl={self.ttl}s"
        return f"S3Store(endpoint={host!r}, bucket={self.bucket_name!r}, prefix={self.prefix!r}, {mode})"

    __str__ = __repr__
