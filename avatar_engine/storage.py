"""Object storage for delivering rendered MP4s: GCS (V4 signed URLs) or any S3-compatible bucket.

The pipeline only sees the `ObjectStore` protocol: `exists` for the content-addressed cache,
`upload` with retries, `link` for a time-limited (or public) download URL, `delete`.

Secrets policy: service-account keys, access tokens, S3 secrets, resumable-session URLs and
signed URLs are never put in logs, exception messages or reprs. Failures surface as
`AvatarError("upload_failed", ...)` whose message names only the operation, the object key,
the exception type and the HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qs, quote, urlparse

import tenacity

from avatar_engine.errors import AvatarError
from avatar_engine.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: GCS and S3 both refuse signed/presigned URLs valid for longer than seven days.
MAX_URL_TTL_S = 604800
#: HTTP statuses worth another attempt (GCS and S3 retry guidance).
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
#: GCS resumable chunks must be multiples of 256 KiB.
GCS_CHUNK_MULTIPLE = 256 * 1024
#: S3 multipart parts (except the last) must be at least 5 MiB.
S3_MIN_PART = 5 * 1024 * 1024
DEFAULT_CHUNK = 8 * 1024 * 1024
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GCS_DEFAULT_ENDPOINT = "https://storage.googleapis.com"


@dataclass(frozen=True)
class StoredObject:
    """Where a delivered object lives and how a client can fetch it."""

    name: str  # full object key inside the bucket (media_prefix included)
    url: str  # signed/presigned GET URL, or the plain public URL
    expires_at: datetime | None  # UTC expiry of a signed URL; None for a public URL
    public: bool


@runtime_checkable
class ObjectStore(Protocol):
    """What delivery needs from a bucket; names are relative to the configured prefix."""

    def exists(self, name: str) -> bool: ...

    def upload(
        self,
        local_path: str | os.PathLike[str],
        name: str,
        *,
        content_type: str = "video/mp4",
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None: ...

    def link(self, name: str) -> StoredObject: ...

    def delete(self, name: str) -> None: ...


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------


def object_key(prefix: str, name: str) -> str:
    """Join prefix and name, refusing names that could escape the prefix or confuse URLs."""
    if not name or name.startswith("/") or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise ValueError("object name must be a non-empty relative path without control characters")
    if any(seg in ("", ".", "..") for seg in name.split("/")):
        raise ValueError("object name must not contain empty, '.' or '..' segments")
    p = (prefix or "").strip("/")
    return f"{p}/{name}" if p else name


def capped_ttl(ttl: int | float) -> int:
    """Signed URLs live at least a second and at most seven days (the providers' hard limit)."""
    return max(1, min(int(ttl), MAX_URL_TTL_S))


def _status_of(exc: BaseException) -> int | None:
    """HTTP status carried by a google-api-core, resumable-media or botocore error, if any."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 100 <= code < 600:
        return code
    resp = getattr(exc, "response", None)
    status = getattr(resp, "status_code", None)
    if isinstance(status, int):
        return status
    if isinstance(resp, dict):  # botocore ClientError.response
        status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def _describe(exc: BaseException) -> str:
    """A log/exception-safe summary: the type and status only, never str(exc) (may hold URLs)."""
    status = _status_of(exc)
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")


def _network_error_types() -> tuple[type[BaseException], ...]:
    import requests
    import urllib3

    return (
        ConnectionError,  # builtin: covers reset/refused/aborted
        TimeoutError,
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
        http.client.HTTPException,  # BadStatusLine, IncompleteRead, RemoteDisconnected ...
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.TimeoutError,
    )


def _retrying(
    predicate: Callable[[BaseException], bool],
    *,
    what: str,
    key: str,
    max_attempts: int,
    backoff_initial: float,
    backoff_max: float,
    deadline_s: float,
) -> tenacity.Retrying:
    """Exponential backoff with jitter, bounded by attempts and total time; logs safely."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "storage %s of %s failed on attempt %d/%d (%s); retrying in %.2fs",
            what,
            key,
            state.attempt_number,
            max_attempts,
            _describe(exc) if exc else "?",
            state.next_action.sleep if state.next_action else 0.0,
        )

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_attempts) | tenacity.stop_after_delay(deadline_s),
        wait=tenacity.wait_exponential(multiplier=backoff_initial, max=backoff_max)
        + tenacity.wait_random(0, backoff_initial),
        retry=tenacity.retry_if_exception(predicate),
        before_sleep=before_sleep,
        reraise=True,
    )


def _secret(value: Any) -> Any:
    """Accept plain strings or pydantic SecretStr (recommended for the key-bearing settings)."""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _file_size(local_path: str | os.PathLike[str]) -> int:
    try:
        return Path(local_path).stat().st_size
    except OSError as exc:
        raise AvatarError("upload_failed", f"local output file is not readable ({type(exc).__name__})") from None


# --------------------------------------------------------------------------------------
# GCS
# --------------------------------------------------------------------------------------


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
    import warnings

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

    if isinstance(exc, _network_error_types()) or isinstance(exc, DataCorruption):
        return True
    if isinstance(exc, (api_exceptions.GoogleAPICallError, InvalidResponse)):
        return _status_of(exc) in RETRYABLE_STATUS
    if isinstance(exc, auth_exceptions.TransportError):
        # token refresh / IAM signBlob hiccups; the cause, when present, says which
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        return True if inner is None else _gcs_retryable(inner)
    return False


class GCSStore:
    """Google Cloud Storage via google-cloud-storage; V4 signed URLs or public URLs.

    Credentials, first match wins: GCS_CREDENTIALS_JSON (inline, plain or base64),
    GOOGLE_APPLICATION_CREDENTIALS (file), then Application Default Credentials. Keys that
    can sign (service-account keys, impersonated credentials) sign locally; anything else
    (e.g. the Compute Engine / Cloud Run metadata identity) signs through IAM signBlob as
    GCS_SIGNING_SERVICE_ACCOUNT or the identity's own e-mail.

    With STORAGE_EMULATOR_HOST set, the client talks to the emulator anonymously; signed URLs
    still need a key and point at the emulator.
    """

    def __init__(
        self,
        settings: Settings,
        client: Any | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 20.0,
        retry_deadline_s: float = 600.0,
        timeout: float | tuple[float, float] = (10.0, 120.0),
    ):
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
        self._retry_kw = dict(
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            deadline_s=retry_deadline_s,
        )
        self._timeout = timeout
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
            info = parse_credentials_json(_secret(settings.gcs_credentials_json))
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

    # -- protocol ----------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Best effort for the cache: a storage error counts as a miss (logged), never a failure."""
        key = object_key(self.prefix, name)
        blob = self._bucket.blob(key)
        try:
            return bool(
                _retrying(_gcs_retryable, what="exists", key=key, **self._retry_kw)(
                    lambda: blob.exists(timeout=self._timeout, retry=None)
                )
            )
        except Exception as exc:  # noqa: BLE001 - degrade to a cache miss
            log.warning("storage exists(%s) failed (%s); treating as missing", key, _describe(exc))
            return False

    def upload(
        self,
        local_path: str | os.PathLike[str],
        name: str,
        *,
        content_type: str = "video/mp4",
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        """Upload with whole-object retries; objects above 8 MiB go resumable in chunk_size pieces.

        Each retry restarts the upload (names are content-addressed, so overwriting is
        idempotent). On final failure any object left under the name is deleted.
        """
        key = object_key(self.prefix, name)
        size = _file_size(local_path)
        log.info("storage upload gs://%s/%s (%d bytes)", self.bucket_name, key, size)

        def attempt() -> None:
            blob = self._bucket.blob(key, chunk_size=self.chunk_size)
            blob.metadata = dict(metadata) if metadata else None
            if cache_control:
                blob.cache_control = cache_control
            blob.upload_from_filename(
                str(local_path),
                content_type=content_type,
                timeout=self._timeout,
                retry=None,  # tenacity owns retries so attempts and backoff are ours
            )

        try:
            _retrying(_gcs_retryable, what="upload", key=key, **self._retry_kw)(attempt)
        except AvatarError:
            raise
        except Exception as exc:  # noqa: BLE001 - converted to a safe, typed failure
            self._cleanup_partial(key)
            raise AvatarError(
                "upload_failed",
                f"upload of {key} to GCS failed: {_describe(exc)}",
                details={"error": type(exc).__name__, "status": _status_of(exc)},
            ) from None

    def _cleanup_partial(self, key: str) -> None:
        try:
            self._bucket.blob(key).delete(timeout=self._timeout)
        except Exception as exc:  # noqa: BLE001 - NotFound is the usual, happy case
            from google.api_core.exceptions import NotFound

            if not isinstance(exc, NotFound):
                log.warning("storage cleanup of %s failed (%s)", key, _describe(exc))

    def link(self, name: str) -> StoredObject:
        """Public URL when GCS_PUBLIC (the bucket must grant allUsers read), else a V4 signed GET."""
        key = object_key(self.prefix, name)
        if self.public:
            url = f"{self.endpoint}/{self.bucket_name}/{quote(key, safe='/~')}"
            return StoredObject(name=key, url=url, expires_at=None, public=True)

        def sign() -> str:
            return self._bucket.blob(key).generate_signed_url(
                version="v4",
                method="GET",
                expiration=timedelta(seconds=self.ttl),
                api_access_endpoint=self.endpoint,
                **self._sign_kwargs(),
            )

        try:
            url = _retrying(_gcs_retryable, what="signing", key=key, **self._retry_kw)(sign)
        except AvatarError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise AvatarError("upload_failed", f"could not sign a URL for {key}: {_describe(exc)}") from None
        return StoredObject(name=key, url=url, expires_at=_goog_expiry(url, self.ttl), public=False)

    def delete(self, name: str) -> None:
        """Idempotent: a missing object is fine."""
        from google.api_core.exceptions import NotFound

        key = object_key(self.prefix, name)
        blob = self._bucket.blob(key)
        try:
            _retrying(_gcs_retryable, what="delete", key=key, **self._retry_kw)(
                lambda: blob.delete(timeout=self._timeout, retry=None)
            )
        except NotFound:
            pass
        except Exception as exc:  # noqa: BLE001
            raise AvatarError("upload_failed", f"delete of {key} failed: {_describe(exc)}") from None

    def __repr__(self) -> str:
        mode = "public" if self.public else f"signed ttl={self.ttl}s signer={self._signer_email or 'none'}"
        emu = " emulator" if self._emulator else ""
        return f"GCSStore(bucket={self.bucket_name!r}, prefix={self.prefix!r}, {mode}{emu})"

    __str__ = __repr__


def _goog_expiry(url: str, ttl: int) -> datetime:
    """Expiry from the URL's own X-Goog-Date + X-Goog-Expires (falls back to now + ttl)."""
    q = parse_qs(urlparse(url).query)
    try:
        start = datetime.strptime(q["X-Goog-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        return start + timedelta(seconds=int(q["X-Goog-Expires"][0]))
    except (KeyError, ValueError, IndexError):
        return datetime.now(timezone.utc) + timedelta(seconds=ttl)


# --------------------------------------------------------------------------------------
# S3-compatible (Cloudflare R2, AWS S3, MinIO, Backblaze ...) with Runpod's env names
# --------------------------------------------------------------------------------------

_S3_RETRYABLE_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException"}
)


def _s3_retryable(exc: BaseException) -> bool:
    """Same policy as GCS; boto3's upload wrapper hides the ClientError in __context__."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, S3UploadFailedError):
        inner = exc.__cause__ or exc.__context__
        return inner is not None and _s3_retryable(inner)
    if isinstance(exc, (BotoConnectionError, HTTPClientError)) or isinstance(exc, _network_error_types()):
        return True
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return _status_of(exc) in RETRYABLE_STATUS or code in _S3_RETRYABLE_CODES
    return False


def _s3_status(exc: BaseException) -> int | None:
    from boto3.exceptions import S3UploadFailedError

    if isinstance(exc, S3UploadFailedError):
        inner = exc.__cause__ or exc.__context__
        return _status_of(inner) if inner is not None else None
    return _status_of(exc)


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


class S3Store:
    """S3-compatible bucket via boto3 (BUCKET_ENDPOINT_URL / BUCKET_ACCESS_KEY_ID /
    BUCKET_SECRET_ACCESS_KEY, bucket from BUCKET_NAME or MEDIA_BUCKET); presigned GET URLs.

    botocore's own retries are off so that tenacity's policy is the only one.
    """

    def __init__(
        self,
        settings: Settings,
        client: Any | None = None,
        *,
        public_base_url: str | None = None,
        region: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        max_attempts: int = 5,
        backoff_initial: float = 1.0,
        backoff_max: float = 20.0,
        retry_deadline_s: float = 600.0,
    ):
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
        self._retry_kw = dict(
            max_attempts=max_attempts,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            deadline_s=retry_deadline_s,
        )
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
                aws_secret_access_key=_secret(settings.bucket_secret_access_key),
                region_name=region or s3_region_from_endpoint(settings.bucket_endpoint_url or ""),
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=120,
                ),
            )
        self._client = client

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        return _retrying(_s3_retryable, what=what, key=key, **self._retry_kw)(fn)

    def exists(self, name: str) -> bool:
        """Best effort for the cache: errors other than 404 count as a miss (logged)."""
        from botocore.exceptions import ClientError

        key = object_key(self.prefix, name)
        try:
            self._call("exists", key, lambda: self._client.head_object(Bucket=self.bucket_name, Key=key))
            return True
        except ClientError as exc:
            if _status_of(exc) == 404 or exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            log.warning("storage exists(%s) failed (%s); treating as missing", key, _describe(exc))
            return False
        except Exception as exc:  # noqa: BLE001
            log.warning("storage exists(%s) failed (%s); treating as missing", key, _describe(exc))
            return False

    def upload(
        self,
        local_path: str | os.PathLike[str],
        name: str,
        *,
        content_type: str = "video/mp4",
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        """boto3 managed transfer (multipart above chunk_size) with whole-object retries."""
        from boto3.s3.transfer import TransferConfig

        key = object_key(self.prefix, name)
        size = _file_size(local_path)
        log.info("storage upload s3 %s/%s (%d bytes)", self.bucket_name, key, size)
        extra: dict[str, Any] = {"ContentType": content_type}
        if metadata:
            extra["Metadata"] = dict(metadata)
        if cache_control:
            extra["CacheControl"] = cache_control
        config = TransferConfig(
            multipart_threshold=self.chunk_size,
            multipart_chunksize=self.chunk_size,
            max_concurrency=2,
            use_threads=True,
        )

        def attempt() -> None:
            self._client.upload_file(str(local_path), self.bucket_name, key, ExtraArgs=extra, Config=config)

        try:
            self._call("upload", key, attempt)
        except Exception as exc:  # noqa: BLE001
            self._cleanup_partial(key)
            status = _s3_status(exc)
            raise AvatarError(
                "upload_failed",
                f"upload of {key} to S3 failed: {type(exc).__name__}" + (f" (HTTP {status})" if status else ""),
                details={"error": type(exc).__name__, "status": status},
            ) from None

    def _cleanup_partial(self, key: str) -> None:
        """boto3 aborts its multipart upload itself; this removes a completed-but-unacked object."""
        try:
            self._client.delete_object(Bucket=self.bucket_name, Key=key)
        except Exception as exc:  # noqa: BLE001
            log.warning("storage cleanup of %s failed (%s)", key, _describe(exc))

    def link(self, name: str) -> StoredObject:
        """Presigned GET (TTL from GCS_SIGNED_URL_TTL, capped at 7 days) or public_base_url/key."""
        key = object_key(self.prefix, name)
        if self.public_base_url:
            return StoredObject(key, f"{self.public_base_url}/{quote(key, safe='/~')}", None, True)
        try:
            url = self._client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket_name, "Key": key}, ExpiresIn=self.ttl
            )
        except Exception as exc:  # noqa: BLE001
            raise AvatarError("upload_failed", f"could not presign a URL for {key}: {_describe(exc)}") from None
        return StoredObject(key, url, datetime.now(timezone.utc) + timedelta(seconds=self.ttl), False)

    def delete(self, name: str) -> None:
        """Idempotent (S3 DELETE of a missing key succeeds)."""
        key = object_key(self.prefix, name)
        try:
            self._call("delete", key, lambda: self._client.delete_object(Bucket=self.bucket_name, Key=key))
        except Exception as exc:  # noqa: BLE001
            raise AvatarError("upload_failed", f"delete of {key} failed: {_describe(exc)}") from None

    def __repr__(self) -> str:
        host = urlparse(self.endpoint or "").hostname or "default"
        mode = "public" if self.public_base_url else f"presigned ttl={self.ttl}s"
        return f"S3Store(endpoint={host!r}, bucket={self.bucket_name!r}, prefix={self.prefix!r}, {mode})"

    __str__ = __repr__


# --------------------------------------------------------------------------------------


def make_store(settings: Settings, **kwargs: Any) -> ObjectStore | None:
    """S3 when BUCKET_ENDPOINT_URL is set, GCS when MEDIA_BUCKET is, else None (no bucket).

    Credential problems raise AvatarError("upload_failed") with a message that names the
    variable to fix, never its value.
    """
    kwargs.setdefault("max_attempts", settings.storage_max_attempts)
    kwargs.setdefault("retry_deadline_s", settings.storage_retry_deadline_s)
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
