"""What every bucket client shares: the `ObjectStore` protocol, object keys, the URL TTL cap, ONE retry
policy (tenacity, bounded by attempts, its own deadline and the job's time left) and ONE flow per
operation (exists, upload with partial-object cleanup, link, delete, read, list).

`BucketStore` owns the flows; `GCSStore` / `S3Store` implement only the client calls (`_head`, `_put`,
`_remove`, `_get`, `_list`, `_public_url`, `_signed_url`) and say which errors are transient.

Secrets policy: service-account keys, access tokens, S3 secrets, resumable-session URLs and signed
URLs are never put in logs, exception messages or reprs. Failures surface as
`AvatarError("upload_failed", ...)` whose message names only the operation, the object key, the
exception type and the HTTP status.
"""

from __future__ import annotations

import copy
import http.client
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, TypeVar, runtime_checkable

import tenacity

from avatar_engine.errors import AvatarError

if TYPE_CHECKING:
    from avatar_engine.serving.deadline import Deadline

#: one logger for the package: operators filter on it, tests read it
log = logging.getLogger("avatar_engine.storage")

T = TypeVar("T")

#: GCS and S3 both refuse signed/presigned URLs valid for longer than seven days.
MAX_URL_TTL_S = 604800
#: HTTP statuses worth another attempt (GCS and S3 retry guidance).
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """Where a delivered object lives and how a client can fetch it."""

    name: str  # full object key inside the bucket (media_prefix included)
    url: str  # signed/presigned GET URL, or the plain public URL
    expires_at: datetime | None  # UTC expiry of a signed URL; None for a public URL
    public: bool


@runtime_checkable
class ObjectStore(Protocol):
    """What delivery and named avatars need from a bucket; names are relative to the store's prefix."""

    def exists(self, name: str) -> bool: ...

    def upload(self, local_path: str | os.PathLike[str], name: str, *, content_type: str = "video/mp4",
               metadata: dict[str, str] | None = None, cache_control: str | None = None,
               deadline: Deadline | None = None) -> None: ...

    def link(self, name: str) -> StoredObject: ...

    def delete(self, name: str) -> None: ...

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes: ...

    def list(self, prefix: str = "") -> list[tuple[str, int]]: ...

    def with_prefix(self, prefix: str) -> ObjectStore: ...


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


def status_of(exc: BaseException) -> int | None:
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


def describe(exc: BaseException, status: int | None = None) -> str:
    """A log/exception-safe summary: the type and status only, never str(exc) (may hold URLs)."""
    status = status_of(exc) if status is None else status
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")


def network_error_types() -> tuple[type[BaseException], ...]:
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


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and backoff of every storage call (STORAGE_* settings); per-request timeouts too."""

    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 20.0
    deadline_s: float = 600.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 120.0

    @classmethod
    def build(cls, *, max_attempts: int = 5, backoff_initial: float = 1.0, backoff_max: float = 20.0,
              retry_deadline_s: float = 600.0, timeout: float | tuple[float, float] = (10.0, 120.0)) -> RetryPolicy:
        """From the store constructors' keyword arguments (a single timeout means connect = read)."""
        connect_s, read_s = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        return cls(max_attempts=max_attempts, backoff_initial=backoff_initial, backoff_max=backoff_max,
                   deadline_s=retry_deadline_s, connect_timeout_s=connect_s, read_timeout_s=read_s)

    def timeout(self, deadline: Deadline | None = None) -> tuple[float, float]:
        """(connect, read) seconds for one request, never longer than the job has left."""
        if deadline is None:
            return (self.connect_timeout_s, self.read_timeout_s)
        left = max(0.05, deadline.remaining())
        return (min(self.connect_timeout_s, left), min(self.read_timeout_s, left))


def retrying(
    predicate: Callable[[BaseException], bool],
    policy: RetryPolicy,
    *,
    what: str,
    key: str,
    deadline: Deadline | None = None,
) -> tenacity.Retrying:
    """Exponential backoff with jitter, bounded by attempts and by the smaller of the policy's deadline
    and the job's time left; a cancelled job stops retrying at once. Logs safely."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "storage %s of %s failed on attempt %d/%d (%s); retrying in %.2fs",
            what,
            key,
            state.attempt_number,
            policy.max_attempts,
            describe(exc) if exc else "?",
            state.next_action.sleep if state.next_action else 0.0,
        )

    budget_s = policy.deadline_s if deadline is None else max(0.0, min(policy.deadline_s, deadline.remaining()))
    stop = tenacity.stop_after_attempt(policy.max_attempts) | tenacity.stop_after_delay(budget_s)
    sleep = tenacity.nap.sleep
    if deadline is not None:
        stop = stop | tenacity.stop_when_event_set(deadline.cancelled)
        sleep = deadline.cancelled.wait  # a cancel wakes the backoff up
    return tenacity.Retrying(
        stop=stop,
        wait=tenacity.wait_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)
        + tenacity.wait_random(0, policy.backoff_initial),
        retry=tenacity.retry_if_exception(predicate),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )


def secret(value: Any) -> Any:
    """Accept plain strings or pydantic SecretStr (recommended for the key-bearing settings)."""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def file_size(local_path: str | os.PathLike[str]) -> int:
    try:
        return Path(local_path).stat().st_size
    except OSError as exc:
        raise AvatarError("upload_failed", f"local output file is not readable ({type(exc).__name__})") from None


# --------------------------------------------------------------------------------------
# the shared flows
# --------------------------------------------------------------------------------------


class BucketStore:
    """The `ObjectStore` flows over a client's primitive calls (each primitive works on full keys)."""

    provider: ClassVar[str]  # "GCS" / "S3", for messages
    bucket_name: str
    prefix: str
    policy: RetryPolicy

    # -- client-specific primitives ----------------------------------------------------

    def _retryable(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def _status(self, exc: BaseException) -> int | None:
        return status_of(exc)

    def _is_missing(self, exc: BaseException) -> bool:
        """The error says the object does not exist (deletes of missing objects are fine)."""
        raise NotImplementedError

    def _head(self, key: str, timeout: tuple[float, float]) -> bool:
        raise NotImplementedError

    def _put(self, local_path: str, key: str, *, content_type: str, metadata: dict[str, str] | None,
             cache_control: str | None, timeout: tuple[float, float]) -> None:
        raise NotImplementedError

    def _remove(self, key: str, timeout: tuple[float, float]) -> None:
        raise NotImplementedError

    def _get(self, key: str, max_bytes: int | None, timeout: tuple[float, float]) -> bytes:
        """The bytes; raises a `_is_missing` error when absent, `input_too_large` over `max_bytes`."""
        raise NotImplementedError

    def _list(self, key_prefix: str, timeout: tuple[float, float]) -> list[tuple[str, int]]:
        raise NotImplementedError

    def _public_url(self, key: str) -> str | None:
        raise NotImplementedError

    def _signed_url(self, key: str) -> tuple[str, datetime]:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------

    def _call(self, what: str, key: str, fn: Callable[[], T], deadline: Deadline | None = None) -> T:
        return retrying(self._retryable, self.policy, what=what, key=key, deadline=deadline)(fn)

    def _cleanup_partial(self, key: str) -> None:
        """Remove whatever a failed upload left under `key`; a missing object is the happy case."""
        try:
            self._remove(key, self.policy.timeout())
        except Exception as exc:  # noqa: BLE001
            if not self._is_missing(exc):
                log.warning("storage cleanup of %s failed (%s)", key, describe(exc))

    def with_prefix(self, prefix: str) -> BucketStore:
        """The same bucket and client under another prefix (e.g. named avatars beside the outputs)."""
        view = copy.copy(self)
        view.prefix = prefix or ""
        return view

    # -- the protocol ------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        """Best effort for the cache: a storage error counts as a miss (logged), never a failure."""
        key = object_key(self.prefix, name)
        try:
            return bool(self._call("exists", key, lambda: self._head(key, self.policy.timeout())))
        except Exception as exc:  # noqa: BLE001 - degrade to a cache miss
            log.warning("storage exists(%s) failed (%s); treating as missing", key, describe(exc))
            return False

    def upload(
        self,
        local_path: str | os.PathLike[str],
        name: str,
        *,
        content_type: str = "video/mp4",
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        """Whole-object retries (names are content-addressed, so overwriting is idempotent); on final
        failure, a job timeout or a cancel, any object left under the name is deleted.

        With a `deadline` the attempts run in a helper thread the job stops waiting for when its time
        is up (a stalled request cannot hold it); if that thread later completes an upload, it removes
        the object itself.
        """
        key = object_key(self.prefix, name)
        size = file_size(local_path)
        log.info("storage upload %s %s/%s (%d bytes)", self.provider, self.bucket_name, key, size)

        def attempts() -> None:
            self._call("upload", key, lambda: self._put(
                str(local_path), key, content_type=content_type, metadata=metadata, cache_control=cache_control,
                timeout=self.policy.timeout(deadline)), deadline)

        try:
            if deadline is None:
                attempts()
            else:
                deadline.call(attempts, stage="upload", on_abandoned=lambda: self._cleanup_partial(key))
        except AvatarError:
            self._cleanup_partial(key)
            raise
        except BaseException as exc:  # JobCancelled / interpreter exit: clean up, never convert
            self._cleanup_partial(key)
            if not isinstance(exc, Exception):
                raise
            if deadline is not None:
                deadline.check("upload")  # the retries ran out of job time: `timeout`, not `upload_failed`
            status = self._status(exc)
            raise AvatarError(
                "upload_failed",
                f"upload of {key} to {self.provider} failed: {describe(exc, status)}",
                details={"error": type(exc).__name__, "status": status},
            ) from None

    def link(self, name: str) -> StoredObject:
        """The public URL when the store is public, else a signed GET valid for the TTL."""
        key = object_key(self.prefix, name)
        public = self._public_url(key)
        if public is not None:
            return StoredObject(name=key, url=public, expires_at=None, public=True)
        try:
            url, expires_at = self._call("signing", key, lambda: self._signed_url(key))
        except AvatarError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise AvatarError("upload_failed", f"could not sign a URL for {key}: {describe(exc)}") from None
        return StoredObject(name=key, url=url, expires_at=expires_at, public=False)

    def delete(self, name: str) -> None:
        """Idempotent: a missing object is fine."""
        key = object_key(self.prefix, name)
        try:
            self._call("delete", key, lambda: self._remove(key, self.policy.timeout()))
        except Exception as exc:  # noqa: BLE001
            if not self._is_missing(exc):
                raise AvatarError("upload_failed", f"delete of {key} failed: {describe(exc)}") from None

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes. `FileNotFoundError` when it does not exist, `input_too_large` over
        `max_bytes` (checked before downloading), `fetch_failed` for other storage errors."""
        key = object_key(self.prefix, name)
        try:
            return self._call("read", key, lambda: self._get(key, max_bytes, self.policy.timeout()))
        except AvatarError:
            raise
        except Exception as exc:  # noqa: BLE001
            if self._is_missing(exc):
                raise FileNotFoundError(key) from None
            raise AvatarError("fetch_failed", f"reading {key} from the bucket failed ({describe(exc)})") from None

    def list(self, prefix: str = "") -> list[tuple[str, int]]:
        """(name relative to the store's prefix, size) of the objects directly under `prefix`."""
        base = (self.prefix or "").strip("/")
        full = "/".join(p for p in (base, prefix.strip("/")) if p)
        key_prefix = f"{full}/" if full else ""
        try:
            entries = self._call("list", key_prefix or "/", lambda: self._list(key_prefix, self.policy.timeout()))
        except Exception as exc:  # noqa: BLE001
            raise AvatarError("fetch_failed", f"listing {key_prefix or '/'} failed ({describe(exc)})") from None
        strip = len(f"{base}/") if base else 0
        return [(key[strip:], size) for key, size in entries if key.startswith(key_prefix) and key != key_prefix]
