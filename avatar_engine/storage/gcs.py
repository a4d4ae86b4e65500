"""Google Cloud Storage through google-cloud-storage: V4 signed URLs (local key or IAM signBlob) or
public URLs. Only the client calls live here; retries, cleanup and the deadline are `BucketStore`'s."""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

from avatar_engine.errors import AvatarError
from avatar_engine.settings import Settings

from . import base
from .base import DEFAULT_CHUNK, RETRYABLE_STATUS, BucketStore, RetryPolicy, capped_ttl

#: GCS resumable chunks must be multiples of 256 KiB.
GCS_CHUNK_MULTIPLE = 256 * 1024
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GCS_DEFAULT_ENDPOINT = "https://storage.googleapis.com"


def parse_credentials_json(value: str) -> dict[str, Any]:
    """Decode GCS_CREDENTIALS_JSON: plain JSON, or standard/URL-safe base64 of it (detected).

    Errors never quote the value: it is a private key.
    """
    text = (value or "").strip()
    if not text:
        raise AvatarError("upload_failed", "GCS_CREDENTIALS_JSON is empty")
    if not text.startswith("{"):
        compact = "".join(text.split())
        compact += "=" * (-len(compact) % 4)
        try:
            if "-" in compact or "_" in compact:
                raw = base64.urlsafe_b64decode(compact)
            else:
                raw = base64.b64decode(compact, validate=True)
            text = raw.decode("utf-8").strip()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise AvatarError(
                "upload_failed", "GCS_CREDENTIALS_JSON is neither JSON nor base64-encoded JSON"
            ) from None
    try:
        info = json.loads(text)
    except ValueError:
        raise AvatarError("upload_failed", "GCS_CREDENTIALS_JSON does not contain valid JSON") from None
    if not isinstance(info, dict) or "type" not in info:
        raise AvatarError("upload_failed", "GCS_CREDENTIALS_JSON is not a Google credentials object")
    return info


def _credentials_from_info(info: dict[str, Any], *, source: str) -> tuple[Any, str | None]:
    """Service-account keys load explicitly; other ADC types (impersonation, workload identity,
    user) go through google.auth's generic loader, which is fine for operator-supplied config."""
    import google.auth
    from google.auth import exceptions as auth_exceptions
    from google.oauth2 import service_account

    try:
        if info.get("type") == "service_account":
            creds = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM_SCOPE])
            return creds, info.get("project_id")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return google.auth.load_credentials_from_dict(info, scopes=[CLOUD_PLATFORM_SCOPE])
    except (auth_exceptions.GoogleAuthError, ValueError, KeyError, TypeError, IndexError):
        raise AvatarError("upload_failed", f"{source} could not be loaded as Google credentials") from None


def _gcs_retryable(exc: BaseException) -> bool:
    """429/5xx/408, checksum mismatches, timeouts and connection failures are transient."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

    if isinstance(exc, base.network_error_types()) or isinstance(exc, DataCorruption):
        return True
    if isinstance(exc, (api_exceptions.GoogleAPICallError, InvalidResponse)):
        return base.status_of(exc) in RETRYABLE_STATUS
    if isinstance(exc, auth_exceptions.TransportError):
        # token refresh / IAM signBlob hiccups; the cause, when present, says which
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        return True if inner is None else _gcs_retryable(inner)
    return False


def _goog_expiry(url: str, ttl: int) -> datetime:
    """Expiry from the URL's own X-Goog-Date + X-Goog-Expires (falls back to now + ttl)."""
    q = parse_qs(urlparse(url).query)
    try:
        start = datetime.strptime(q["X-Goog-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        return start + timedelta(seconds=int(q["X-Goog-Expires"][0]))
    except (KeyError, ValueError, IndexError):
        return datetime.now(timezone.utc) + timedelta(seconds=ttl)


class GCSStore(BucketStore):
    """Google Cloud Storage via google-cloud-storage; V4 signed URLs or public URLs.

    Credentials, first match wins: GCS_CREDENTIALS_JSON (inline, plain or base64),
    GOOGLE_APPLICATION_CREDENTIALS (file), then Application Default Credentials. Keys that
    can sign (service-account keys, impersonated credentials) sign locally; anything else
    (e.g. the Compute Engine / Cloud Run metadata identity) signs through IAM signBlob as
    GCS_SIGNING_SERVICE_ACCOUNT or the identity's own e-mail.

    With STORAGE_EMULATOR_HOST set, the client talks to the emulator anonymously; signed URLs
    still need a key and point at the emulator.
    """

    provider = "GCS"

    def __init__(
        self,
        settings: Settings,
        client: Any | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        **retry: Any,
    ):
        """`retry`: max_attempts, backoff_initial, backoff_max, retry_deadline_s, timeout (RetryPolicy.build)."""
        from google.cloud import storage

        bucket = (settings.media_bucket or "").strip()
        if bucket.startswith("gs://"):
            bucket = bucket[5:]
        bucket = bucket.strip("/")
        if not bucket:
            raise ValueError("GCSStore needs MEDIA_BUCKET")
        if chunk_size <= 0 or chunk_size % GCS_CHUNK_MULTIPLE:
            raise ValueError("chunk_size must be a positive multiple of 256 KiB")

        self.bucket_name = bucket
        self.prefix = settings.media_prefix or ""
        self.public = bool(settings.gcs_public)
        self.ttl = capped_ttl(settings.gcs_signed_url_ttl)
        self.chunk_size = chunk_size
        self.policy = RetryPolicy.build(**retry)
        self._token_lock = threading.Lock()
        self._emulator = os.environ.get("STORAGE_EMULATOR_HOST") or None

        creds, project = self._load_credentials(settings)
        self._signing_creds = creds
        self._signer_email = self._pick_signer_email(creds, settings.gcs_signing_service_account)

        if client is None:
            if self._emulator:
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(
                    project=project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "local-emulator",
                    credentials=AnonymousCredentials(),
                )
            else:
                client = storage.Client(project=project, credentials=creds)
        self._client = client
        self._bucket = client.bucket(bucket)
        endpoint = getattr(client, "api_endpoint", None) or GCS_DEFAULT_ENDPOINT
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        self.endpoint = endpoint.rstrip("/")

    # -- credentials -------------------------------------------------------------------

    def _load_credentials(self, settings: Settings) -> tuple[Any | None, str | None]:
        """Resolve signing/client credentials without ever echoing key material."""
        import google.auth
        from google.auth import exceptions as auth_exceptions

        if settings.gcs_credentials_json:
            info = parse_credentials_json(base.secret(settings.gcs_credentials_json))
            return _credentials_from_info(info, source="GCS_CREDENTIALS_JSON")
        if settings.google_application_credentials:
            try:
                info = json.loads(Path(settings.google_application_credentials).read_text("utf-8"))
                if not isinstance(info, dict):
                    raise ValueError
            except (OSError, ValueError, UnicodeDecodeError):
                raise AvatarError(
                    "upload_failed", "GOOGLE_APPLICATION_CREDENTIALS file is missing or not JSON"
                ) from None
            return _credentials_from_info(info, source="GOOGLE_APPLICATION_CREDENTIALS")
        if self._emulator:
            # Never probe the metadata server from a dev box/CI: the emulator needs no
            # credentials, and link() explains that signing needs a key.
            return None, None
        try:
            return google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        except auth_exceptions.DefaultCredentialsError:
            raise AvatarError(
                "upload_failed",
                "no Google credentials: set GCS_CREDENTIALS_JSON or GOOGLE_APPLICATION_CREDENTIALS, "
                "or run on GCP with a service account",
            ) from None

    @staticmethod
    def _pick_signer_email(creds: Any | None, configured: str | None) -> str | None:
        from google.auth.credentials import Signing

        if isinstance(creds, Signing):
            return getattr(creds, "signer_email", None) or getattr(creds, "service_account_email", None)
        if configured:
            return configured
        email = getattr(creds, "service_account_email", None)
        return email  # may be "default" until the first refresh on GCE

    def _sign_kwargs(self) -> dict[str, Any]:
        """Local key signing when possible, else IAM signBlob with a fresh access token."""
        from google.auth.credentials import Signing

        creds = self._signing_creds
        if creds is None:
            raise AvatarError(
                "upload_failed",
                "cannot sign URLs: no service-account key (GCS_CREDENTIALS_JSON / "
                "GOOGLE_APPLICATION_CREDENTIALS) configured",
            )
        if isinstance(creds, Signing):
            return {"credentials": creds}
        import google.auth.transport.requests

        with self._token_lock:
            if not creds.valid:
                creds.refresh(google.auth.transport.requests.Request())
            email = self._signer_email
            if not email or email == "default":
                email = getattr(creds, "service_account_email", None)
                self._signer_email = email
            token = creds.token
        if not email or email == "default" or not token:
            raise AvatarError(
                "upload_failed",
                "cannot sign URLs: credentials have no private key and no service-account e-mail "
                "for IAM signBlob (set GCS_SIGNING_SERVICE_ACCOUNT)",
            )
        return {"service_account_email": email, "access_token": token}

    # -- primitives --------------------------------------------------------------------

    def _retryable(self, exc: BaseException) -> bool:
        return _gcs_retryable(exc)

    def _is_missing(self, exc: BaseException) -> bool:
        from google.api_core.exceptions import NotFound

        return isinstance(exc, NotFound)

    def _head(self, key: str, timeout: tuple[float, float]) -> bool:
        return self._bucket.blob(key).exists(timeout=timeout, retry=None)

    def _put(self, local_path: str, key: str, *, content_type: str, metadata: dict[str, str] | None,
             cache_control: str | None, timeout: tuple[float, float]) -> None:
        """Objects above chunk_size go resumable in chunk_size pieces; tenacity owns the retries."""
        blob = self._bucket.blob(key, chunk_size=self.chunk_size)
        blob.metadata = dict(metadata) if metadata else None
        if cache_control:
            blob.cache_control = cache_control
        blob.upload_from_filename(local_path, content_type=content_type, timeout=timeout, retry=None)

    def _remove(self, key: str, timeout: tuple[float, float]) -> None:
        self._bucket.blob(key).delete(timeout=timeout, retry=None)

    def _get(self, key: str, max_bytes: int | None, timeout: tuple[float, float]) -> bytes:
        from google.api_core.exceptions import NotFound

        blob = self._bucket.get_blob(key, timeout=timeout, retry=None)
        if blob is None:
            raise NotFound(key)
        if max_bytes is not None and int(blob.size or 0) > max_bytes:
            raise AvatarError("input_too_large", f"{key} is {blob.size} bytes, over the {max_bytes}-byte limit")
        return blob.download_as_bytes(timeout=timeout, retry=None)

    def _list(self, key_prefix: str, timeout: tuple[float, float]) -> list[tuple[str, int]]:
        blobs = self._bucket.list_blobs(prefix=key_prefix, delimiter="/", timeout=timeout, retry=None)
        return [(b.name, int(b.size or 0)) for b in blobs]

    def cors_rules(self, timeout: tuple[float, float] = (3.0, 5.0)) -> list[dict[str, list[str]]]:
        """The bucket's CORS rules as `[{"origins": [...], "methods": [...]}]` (one metadata GET, no retries);
        raises when the bucket's metadata cannot be read (needs storage.buckets.get)."""
        bucket = self._client.get_bucket(self.bucket_name, timeout=timeout)
        return [{"origins": list(rule.get("origin") or []), "methods": [m.upper() for m in rule.get("method") or []]}
                for rule in bucket.cors or []]

    def _public_url(self, key: str) -> str | None:
        """GCS_PUBLIC: the bucket must grant allUsers read."""
        return f"{self.endpoint}/{self.bucket_name}/{quote(key, safe='/~')}" if self.public else None

    def _signed_url(self, key: str) -> tuple[str, datetime]:
        url = self._bucket.blob(key).generate_signed_url(
            version="v4",
            method="GET",
            expiration=timedelta(seconds=self.ttl),
            api_access_endpoint=self.endpoint,
            **self._sign_kwargs(),
        )
        return url, _goog_expiry(url, self.ttl)

    def __repr__(self) -> str:
        mode = "public" if self.public else f"signed ttl={self.ttl}s signer={self._signer_email or 'none'}"
        emu = " emulator" if self._emulator else ""
        return f"GCSStore(bucket={self.bucket_name!r}, prefix={self.prefix!r}, {mode}{emu})"

    __str__ = __repr__
