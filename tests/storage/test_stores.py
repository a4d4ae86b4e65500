"""Storage layer against real clients: google-cloud-storage + in-process gcp-storage-emulator,
boto3 + moto's threaded server, with a loopback fault-injecting proxy in front of either.

Everything binds 127.0.0.1 and is shut down at module teardown.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import threading
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlparse

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from avatar_engine.errors import AvatarError
from avatar_engine.settings import Settings
from avatar_engine.storage import (
    MAX_URL_TTL_S,
    GCSStore,
    ObjectStore,
    S3Store,
    StoredObject,
    make_store,
    object_key,
    parse_credentials_json,
    s3_region_from_endpoint,
)
from tests.support.gcs import gcs_emulator as start_gcs_emulator
from tests.support.gcs import service_account
from tests.support.http import serve

BUCKET = "avatar-test"
SA_EMAIL = "renderer@avatar-test.iam.gserviceaccount.com"
FAST_RETRY = dict(max_attempts=4, backoff_initial=0.01, backoff_max=0.03)
_STORAGE_ENV = (
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GCS_CREDENTIALS_JSON",
    "GCS_PUBLIC",
    "GCS_SIGNED_URL_TTL",
    "GCS_SIGNING_SERVICE_ACCOUNT",
    "MEDIA_BUCKET",
    "MEDIA_PREFIX",
    "BUCKET_ENDPOINT_URL",
    "BUCKET_ACCESS_KEY_ID",
    "BUCKET_SECRET_ACCESS_KEY",
    "BUCKET_NAME",
    "API_ENDPOINT_OVERRIDE",
)


# --------------------------------------------------------------------------------------
# fixtures: key material, emulator, moto, fault proxy
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sa_info(rsa_key) -> dict:
    return {**service_account("avatar-test", rsa_key), "client_email": SA_EMAIL}


@pytest.fixture(scope="module")
def sa_json(sa_info) -> str:
    return json.dumps(sa_info)


@pytest.fixture(scope="module")
def secret_fragments(sa_info) -> list[str]:
    """Substrings that must never show up anywhere observable."""
    body = "".join(sa_info["private_key"].splitlines()[1:-1])
    return [body[10:60], body[-60:-10], sa_info["private_key_id"], "S3-SECRET-do-not-log"]


INJECTED_BODY = b'{"error": {"code": 503, "message": "injected by test proxy"}}'


class FaultProxy:
    """Loopback HTTP proxy that forwards to an upstream and can fail chosen requests.

    Modes: "503" answers 503 without forwarding; "after" forwards, then answers 503 (the
    upstream did the work but the client sees a failure); "drop" closes the socket unanswered.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.rules: list[list] = []
        self.log: list[tuple[str, str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # so `Expect: 100-continue` (boto3 PUTs) is answered at once

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _body(self) -> bytes:
                n = self.headers.get("Content-Length")
                if n:
                    return self.rfile.read(int(n))
                if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if not size:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return b""

            def _handle(self):
                body = self._body()
                mode = proxy._take_rule(self.command, self.path)
                if mode == "drop":
                    proxy._record(self.command, self.path, 0)
                    self.close_connection = True
                    return
                if mode == "503":
                    return self._reply(503, [("Content-Type", "application/json")], INJECTED_BODY)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length", "expect")
                }
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    status, resp_headers = resp.status, resp.getheaders()
                finally:
                    conn.close()
                if mode == "after":
                    return self._reply(503, [("Content-Type", "application/json")], INJECTED_BODY)
                self._reply(status, resp_headers, data)

            def _reply(self, status, headers, data: bytes):
                proxy._record(self.command, self.path, status)
                self.send_response(status)
                for k, v in headers:
                    if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                        continue
                    if k.lower() == "content-length" and self.command != "HEAD":
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self.server, self.url, self.thread = serve(Handler)

    def fail(self, count: int, *, mode: str = "503", match=lambda method, path: True) -> None:
        with self.lock:
            self.rules.append([match, mode, count])

    def reset(self) -> None:
        with self.lock:
            self.rules.clear()
            self.log.clear()

    def _take_rule(self, method: str, path: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                match, mode, left = rule
                if left > 0 and match(method, path):
                    rule[2] -= 1
                    return mode
        return None

    def _record(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.log.append((method, path, status))

    def requests(self, method: str | None = None, contains: str = "") -> list[tuple[str, str, int]]:
        with self.lock:
            return [r for r in self.log if (method is None or r[0] == method) and contains in r[1]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def is_upload(method: str, path: str) -> bool:
    return path.startswith("/upload/storage/v1/")


@pytest.fixture(scope="module")
def gcs_emulator():
    with start_gcs_emulator(BUCKET) as port:
        proxy = FaultProxy(port)
        try:
            yield proxy
        finally:
            proxy.close()


@pytest.fixture
def clean_env(monkeypatch):
    for var in _STORAGE_ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def emu(gcs_emulator, clean_env):
    """The fault proxy in front of the emulator, as STORAGE_EMULATOR_HOST, with no faults armed."""
    gcs_emulator.reset()
    clean_env.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.url)
    yield gcs_emulator
    gcs_emulator.reset()


def gcs_settings(sa_json: str | None, **over) -> Settings:
    kw = dict(media_bucket=BUCKET, media_prefix="avatar-outputs/", gcs_credentials_json=sa_json)
    kw.update(over)
    return Settings(**kw)


@pytest.fixture
def gcs_store(emu, sa_json) -> GCSStore:
    return GCSStore(gcs_settings(sa_json), chunk_size=256 * 1024, **FAST_RETRY)


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def unique(suffix: str = ".mp4") -> str:
    return f"{uuid.uuid4().hex}{suffix}"


def http_get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback only
        return resp.status, resp.read()


# --------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------


def test_object_key_joins_prefix_and_rejects_escapes():
    assert object_key("avatar-outputs/", "ab/cd.mp4") == "avatar-outputs/ab/cd.mp4"
    assert object_key("/p", "x.mp4") == "p/x.mp4"
    assert object_key("", "x.mp4") == "x.mp4"
    for bad in ["", "/abs.mp4", "../x.mp4", "a/../b", "a//b", "a/./b", "x\n.mp4", "dir/"]:
        with pytest.raises(ValueError):
            object_key("p/", bad)


def test_s3_region_follows_runpod_convention():
    assert s3_region_from_endpoint("https://s3.eu-west-2.amazonaws.com") == "eu-west-2"
    assert s3_region_from_endpoint("https://bucket.s3.us-west-004.backblazeb2.com") == "us-west-004"
    assert s3_region_from_endpoint("https://nyc3.digitaloceanspaces.com") == "nyc3"
    assert s3_region_from_endpoint("https://acct.r2.cloudflarestorage.com") == "auto"
    assert s3_region_from_endpoint("http://127.0.0.1:9000") == "us-east-1"


def test_inline_credentials_plain_base64_and_urlsafe(sa_info, sa_json):
    assert parse_credentials_json(sa_json) == sa_info
    std = base64.b64encode(sa_json.encode()).decode()
    assert parse_credentials_json(std) == sa_info
    wrapped = "\n".join(std[i : i + 76] for i in range(0, len(std), 76)) + "\n"
    assert parse_credentials_json(wrapped) == sa_info
    urlsafe = base64.urlsafe_b64encode(sa_json.encode()).decode().rstrip("=")
    assert parse_credentials_json(urlsafe) == sa_info


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all S3-SECRET-do-not-log!!",
        base64.b64encode(b"{broken json S3-SECRET-do-not-log").decode(),
        '{"type": "service_account", "private_key": "S3-SECRET-do-not-log", "client_email": "x@y"}',
        '["S3-SECRET-do-not-log"]',
    ],
)
def test_bad_inline_credentials_fail_without_echoing(emu, value):
    with pytest.raises(AvatarError) as ei:
        GCSStore(gcs_settings(value))
    err = ei.value
    assert err.code == "upload_failed"
    assert "S3-SECRET" not in str(err) and "S3-SECRET" not in repr(err)
    assert "S3-SECRET" not in json.dumps(err.to_dict())
    assert err.__cause__ is None and err.__suppress_context__


def test_make_store_selects_backend(emu, sa_json):
    assert make_store(Settings()) is None
    gcs = make_store(gcs_settings(sa_json))
    assert isinstance(gcs, GCSStore) and isinstance(gcs, ObjectStore)
    s3 = make_store(
        Settings(
            bucket_endpoint_url="http://127.0.0.1:1",
            bucket_access_key_id="AKIAEXAMPLE",
            bucket_secret_access_key="S3-SECRET-do-not-log",
            bucket_name="b",
            media_bucket="ignored-for-s3",
        )
    )
    assert isinstance(s3, S3Store) and s3.bucket_name == "b"
    # endpoint without any bucket name: no store rather than a half-configured one
    assert make_store(Settings(bucket_endpoint_url="http://127.0.0.1:1")) is None
    assert make_store(Settings(bucket_endpoint_url="http://127.0.0.1:1", media_bucket="m")).bucket_name == "m"


# --------------------------------------------------------------------------------------
# GCS against the emulator
# --------------------------------------------------------------------------------------


def test_upload_roundtrip_small_is_multipart(gcs_store, emu, tmp_path):
    data = write_random(tmp_path / "out.mp4", 200_000)
    name = unique()
    assert gcs_store.exists(name) is False
    gcs_store.upload(
        tmp_path / "out.mp4", name, metadata={"cache-key": "abc123"}, cache_control="private, max-age=600"
    )
    assert gcs_store.exists(name) is True
    blob = gcs_store._bucket.get_blob(f"avatar-outputs/{name}")
    assert blob.download_as_bytes() == data
    assert blob.content_type == "video/mp4"
    assert blob.metadata == {"cache-key": "abc123"}
    assert blob.size == len(data)
    uploads = emu.requests(contains="/upload/storage/v1/")
    assert [p for _, p, _ in uploads if "uploadType=multipart" in p]
    assert not [p for _, p, _ in uploads if "uploadType=resumable" in p]


def test_large_upload_goes_resumable_in_chunks(emu, sa_json, tmp_path):
    store = GCSStore(gcs_settings(sa_json), chunk_size=1024 * 1024, **FAST_RETRY)
    size = 9 * 1024 * 1024 + 12345  # above the library's 8 MiB single-request limit
    data = write_random(tmp_path / "big.mp4", size)
    name = unique()
    store.upload(tmp_path / "big.mp4", name)
    starts = emu.requests("POST", "uploadType=resumable")
    chunks = emu.requests("PUT", "upload_id=")
    assert len(starts) == 1
    assert len(chunks) == 10  # ceil(size / 1 MiB)
    assert store._bucket.blob(f"avatar-outputs/{name}").download_as_bytes() == data


def test_upload_retries_injected_503s(gcs_store, emu, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = write_random(tmp_path / "out.mp4", 50_000)
    emu.fail(2, mode="503", match=is_upload)
    name = unique()
    gcs_store.upload(tmp_path / "out.mp4", name)
    statuses = [s for _, _, s in emu.requests("POST", "/upload/storage/v1/")]
    assert statuses == [503, 503, 200]
    assert gcs_store._bucket.blob(f"avatar-outputs/{name}").download_as_bytes() == data
    retries = [r for r in caplog.records if r.name == "avatar_engine.storage" and "retrying" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 503" in retries[0].getMessage()


def test_upload_retries_dropped_connection(gcs_store, emu, tmp_path):
    data = write_random(tmp_path / "out.mp4", 10_000)
    emu.fail(1, mode="drop", match=is_upload)
    name = unique()
    gcs_store.upload(tmp_path / "out.mp4", name)
    assert gcs_store._bucket.blob(f"avatar-outputs/{name}").download_as_bytes() == data


def test_resumable_chunk_failure_restarts_and_succeeds(emu, sa_json, tmp_path):
    store = GCSStore(gcs_settings(sa_json), chunk_size=4 * 1024 * 1024, **FAST_RETRY)
    data = write_random(tmp_path / "big.mp4", 9 * 1024 * 1024)
    seen = {"n": 0}

    def second_chunk(method, path):
        if method == "PUT" and "upload_id=" in path:
            seen["n"] += 1
            return seen["n"] == 2
        return False

    emu.fail(1, mode="503", match=second_chunk)
    name = unique()
    store.upload(tmp_path / "big.mp4", name)
    assert len(emu.requests("POST", "uploadType=resumable")) == 2  # a fresh session on retry
    assert store._bucket.blob(f"avatar-outputs/{name}").download_as_bytes() == data


def test_give_up_raises_upload_failed_and_leaves_no_object(gcs_store, emu, tmp_path, secret_fragments):
    write_random(tmp_path / "out.mp4", 20_000)
    name = unique()
    # the emulator stores the object each time, but the client only ever sees 503s
    emu.fail(100, mode="after", match=is_upload)
    with pytest.raises(AvatarError) as ei:
        gcs_store.upload(tmp_path / "out.mp4", name)
    err = ei.value
    assert err.code == "upload_failed"
    assert "503" in err.message and name in err.message
    assert err.details == {"error": "ServiceUnavailable", "status": 503}
    assert len(emu.requests("POST", "/upload/storage/v1/")) == FAST_RETRY["max_attempts"]
    emu.reset()
    assert gcs_store.exists(name) is False  # the cleanup removed what the server had kept
    for frag in secret_fragments:
        assert frag not in str(err) and frag not in repr(err)


def test_non_retryable_error_fails_fast(emu, sa_json, tmp_path):
    store = GCSStore(gcs_settings(sa_json, media_bucket="no-such-bucket"), **FAST_RETRY)
    write_random(tmp_path / "out.mp4", 1_000)
    with pytest.raises(AvatarError) as ei:
        store.upload(tmp_path / "out.mp4", unique())
    assert ei.value.code == "upload_failed"
    assert len(emu.requests("POST", "/upload/storage/v1/")) == 1


def test_missing_local_file_is_upload_failed(gcs_store, tmp_path):
    with pytest.raises(AvatarError) as ei:
        gcs_store.upload(tmp_path / "nope.mp4", unique())
    assert ei.value.code == "upload_failed"
    assert str(tmp_path) not in ei.value.message


def test_exists_and_delete(gcs_store, tmp_path):
    write_random(tmp_path / "out.mp4", 1_000)
    name = f"ab/{unique()}"
    assert not gcs_store.exists(name)
    gcs_store.upload(tmp_path / "out.mp4", name)
    assert gcs_store.exists(name)
    gcs_store.delete(name)
    assert not gcs_store.exists(name)
    gcs_store.delete(name)  # idempotent


def test_exists_degrades_to_miss_on_errors(gcs_store, emu, tmp_path, caplog):
    write_random(tmp_path / "out.mp4", 1_000)
    name = unique()
    gcs_store.upload(tmp_path / "out.mp4", name)
    emu.fail(1, mode="503", match=lambda m, p: m == "GET")
    assert gcs_store.exists(name) is True  # one 503 is retried
    emu.fail(100, mode="503", match=lambda m, p: m == "GET")
    assert gcs_store.exists(name) is False  # persistent errors count as a miss
    assert any("treating as missing" in r.getMessage() for r in caplog.records)


def _verify_v4(url: str, public_key) -> dict[str, str]:
    """Independent GOOG4-RSA-SHA256 check: rebuild canonical request and string-to-sign."""
    u = urlparse(url)
    params = parse_qsl(u.query, keep_blank_values=True, strict_parsing=True)
    q = dict(params)
    signature = bytes.fromhex(q.pop("X-Goog-Signature"))
    enc = lambda s: quote(s, safe="-_.~")  # noqa: E731 - RFC 3986 unreserved only
    canonical_query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(q.items()))
    signed_headers = q["X-Goog-SignedHeaders"]
    assert signed_headers == "host"
    canonical_headers = f"host:{u.netloc}\n"
    canonical_request = "\n".join(["GET", u.path, canonical_query, canonical_headers, signed_headers, "UNSIGNED-PAYLOAD"])
    email, scope = q["X-Goog-Credential"].split("/", 1)
    date, location, service, kind = scope.split("/")
    assert (location, service, kind) == ("auto", "storage", "goog4_request")
    assert date == q["X-Goog-Date"][:8]
    string_to_sign = "\n".join(
        ["GOOG4-RSA-SHA256", q["X-Goog-Date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    q["email"] = email
    return q


def test_signed_url_downloads_and_signature_verifies(emu, sa_json, rsa_key, tmp_path):
    store = GCSStore(gcs_settings(sa_json, gcs_signed_url_ttl=3600), **FAST_RETRY)
    data = write_random(tmp_path / "out.mp4", 30_000)
    name = f"ab/{uuid.uuid4().hex} clip+v1.mp4"  # exercises path encoding
    store.upload(tmp_path / "out.mp4", name)
    before = datetime.now(timezone.utc)
    obj = store.link(name)
    assert isinstance(obj, StoredObject) and not obj.public
    assert obj.name == f"avatar-outputs/{name}"
    assert obj.url.startswith(emu.url + f"/{BUCKET}/avatar-outputs/ab/")
    q = _verify_v4(obj.url, rsa_key.public_key())
    assert q["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert q["email"] == SA_EMAIL
    assert q["X-Goog-Expires"] == "3600"
    assert obj.expires_at.tzinfo is not None
    assert timedelta(seconds=3590) < obj.expires_at - before < timedelta(seconds=3610)
    status, body = http_get(obj.url)
    assert status == 200 and body == data
    # a tampered path or expiry no longer verifies
    with pytest.raises(InvalidSignature):
        _verify_v4(obj.url.replace("clip%2Bv1", "clip%2Bv2"), rsa_key.public_key())
    with pytest.raises(InvalidSignature):
        _verify_v4(obj.url.replace("X-Goog-Expires=3600", "X-Goog-Expires=3601"), rsa_key.public_key())


@pytest.mark.parametrize("ttl,expected", [(86400, 86400), (10 * 86400, MAX_URL_TTL_S), (0, 1)])
def test_signed_url_ttl_is_capped(emu, sa_json, rsa_key, ttl, expected):
    store = GCSStore(gcs_settings(sa_json, gcs_signed_url_ttl=ttl))
    q = _verify_v4(store.link("x.mp4").url, rsa_key.public_key())
    assert int(q["X-Goog-Expires"]) == expected <= MAX_URL_TTL_S


def test_public_mode_returns_unsigned_url(emu, sa_json, tmp_path):
    store = GCSStore(gcs_settings(sa_json, gcs_public=True), **FAST_RETRY)
    data = write_random(tmp_path / "out.mp4", 5_000)
    name = unique()
    store.upload(tmp_path / "out.mp4", name)
    obj = store.link(name)
    assert obj.public and obj.expires_at is None
    assert obj.url == f"{emu.url}/{BUCKET}/avatar-outputs/{name}"
    assert "X-Goog" not in obj.url and "?" not in obj.url
    assert http_get(obj.url) == (200, data)


def test_credentials_from_file_and_base64(emu, sa_json, rsa_key, tmp_path):
    key_file = tmp_path / "sa.json"
    key_file.write_text(sa_json)
    from_file = GCSStore(gcs_settings(None, google_application_credentials=key_file))
    _verify_v4(from_file.link("x.mp4").url, rsa_key.public_key())
    b64 = base64.b64encode(sa_json.encode()).decode()
    from_b64 = GCSStore(gcs_settings(b64))
    assert _verify_v4(from_b64.link("x.mp4").url, rsa_key.public_key())["email"] == SA_EMAIL


def test_emulator_without_key_cannot_sign_but_can_upload(emu, tmp_path):
    store = GCSStore(gcs_settings(None), **FAST_RETRY)
    data = write_random(tmp_path / "out.mp4", 1_000)
    name = unique()
    store.upload(tmp_path / "out.mp4", name)
    assert store._bucket.blob(f"avatar-outputs/{name}").download_as_bytes() == data
    with pytest.raises(AvatarError) as ei:
        store.link(name)
    assert ei.value.code == "upload_failed" and "GCS_CREDENTIALS_JSON" in ei.value.message


class _MetadataServerCreds:
    """Stands in for Compute Engine credentials: a token, an e-mail after refresh, no key."""

    def __new__(cls):
        import google.auth.credentials

        class Creds(google.auth.credentials.Credentials):
            def __init__(self):
                super().__init__()
                self.service_account_email = "default"
                self.refreshes = 0

            def refresh(self, request):
                self.refreshes += 1
                self.token = f"ya29.token-{self.refreshes}"
                self.expiry = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=1)
                self.service_account_email = "runtime@avatar-test.iam.gserviceaccount.com"

        return Creds()


@pytest.mark.parametrize("configured", [None, "signer@avatar-test.iam.gserviceaccount.com"])
def test_keyless_signing_goes_through_iam_signblob(clean_env, rsa_key, configured):
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from google.cloud.storage import _signing

    creds = _MetadataServerCreds()
    calls = []

    def fake_sign_message(message, access_token, service_account_email, universe_domain="googleapis.com"):
        calls.append((access_token, service_account_email))
        sig = rsa_key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(sig).decode()

    clean_env.setattr(google.auth, "default", lambda scopes=None, **kw: (creds, "avatar-test"))
    clean_env.setattr(_signing, "_sign_message", fake_sign_message)
    client = storage.Client(project="avatar-test", credentials=AnonymousCredentials())
    store = GCSStore(gcs_settings(None, gcs_signing_service_account=configured), client=client)
    obj = store.link("x.mp4")
    expected_email = configured or "runtime@avatar-test.iam.gserviceaccount.com"
    assert calls == [("ya29.token-1", expected_email)]
    assert obj.url.startswith("https://storage.googleapis.com/avatar-test/avatar-outputs/x.mp4?")
    assert _verify_v4(obj.url, rsa_key.public_key())["email"] == expected_email
    store.link("y.mp4")
    assert creds.refreshes == 1  # a valid token is reused
    assert "ya29" not in repr(store)


def test_secrets_never_in_repr_errors_or_logs(emu, sa_json, tmp_path, caplog, secret_fragments):
    caplog.set_level(logging.DEBUG)
    store = GCSStore(gcs_settings(base64.b64encode(sa_json.encode()).decode()), **FAST_RETRY)
    write_random(tmp_path / "out.mp4", 2_000)
    name = unique()
    emu.fail(1, mode="503", match=is_upload)
    store.upload(tmp_path / "out.mp4", name)
    url = store.link(name).url
    emu.fail(100, mode="503", match=is_upload)
    with pytest.raises(AvatarError) as ei:
        store.upload(tmp_path / "out.mp4", unique())
    observed = [repr(store), str(store), str(ei.value), repr(ei.value), json.dumps(ei.value.to_dict())]
    observed += [r.getMessage() for r in caplog.records]
    for text in observed:
        for frag in secret_fragments:
            assert frag not in text
    ours = " ".join(r.getMessage() for r in caplog.records if r.name == "avatar_engine.storage")
    assert "retrying" in ours
    signature = dict(parse_qsl(urlparse(url).query))["X-Goog-Signature"]
    assert signature not in ours and "upload_id" not in ours
    assert SA_EMAIL in repr(store) and BUCKET in repr(store)


# --------------------------------------------------------------------------------------
# S3-compatible against moto's threaded server
# --------------------------------------------------------------------------------------

S3_SECRET = "S3-SECRET-do-not-log"


@pytest.fixture(scope="module")
def moto_proxy():
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        proxy = FaultProxy(server.get_host_and_port()[1])
        try:
            yield proxy
        finally:
            proxy.close()
    finally:
        server.stop()


@pytest.fixture
def s3_store(moto_proxy, clean_env) -> S3Store:
    moto_proxy.reset()
    settings = Settings(
        bucket_endpoint_url=moto_proxy.url,
        bucket_access_key_id="AKIAEXAMPLEEXAMPLE",
        bucket_secret_access_key=S3_SECRET,
        bucket_name=f"s3-{uuid.uuid4().hex[:12]}",
        gcs_signed_url_ttl=7200,
    )
    store = S3Store(settings, chunk_size=5 * 1024 * 1024, **FAST_RETRY)
    store._client.create_bucket(Bucket=store.bucket_name)
    yield store
    moto_proxy.reset()


def test_s3_roundtrip_presigned_download(s3_store, moto_proxy, tmp_path):
    data = write_random(tmp_path / "out.mp4", 100_000)
    name = unique()
    assert s3_store.exists(name) is False
    s3_store.upload(tmp_path / "out.mp4", name, metadata={"cache-key": "k1"}, cache_control="private, max-age=60")
    assert s3_store.exists(name) is True
    head = s3_store._client.head_object(Bucket=s3_store.bucket_name, Key=f"avatar-outputs/{name}")
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {"cache-key": "k1"}
    assert head["CacheControl"] == "private, max-age=60"
    obj = s3_store.link(name)
    assert not obj.public and obj.name == f"avatar-outputs/{name}"
    q = dict(parse_qsl(urlparse(obj.url).query))
    assert q["X-Amz-Expires"] == "7200" and q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert S3_SECRET not in obj.url
    assert http_get(obj.url) == (200, data)
    s3_store.delete(name)
    assert s3_store.exists(name) is False


def test_s3_large_upload_is_multipart(s3_store, moto_proxy, tmp_path):
    data = write_random(tmp_path / "big.mp4", 11 * 1024 * 1024)
    name = unique()
    s3_store.upload(tmp_path / "big.mp4", name)
    assert moto_proxy.requests("POST", "?uploads")
    assert len(moto_proxy.requests("PUT", "partNumber=")) == 3
    got = s3_store._client.get_object(Bucket=s3_store.bucket_name, Key=f"avatar-outputs/{name}")["Body"].read()
    assert got == data


def test_s3_retry_and_give_up(s3_store, moto_proxy, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    data = write_random(tmp_path / "out.mp4", 20_000)
    name = unique()
    is_put = lambda m, p: m == "PUT" and name in p  # noqa: E731
    moto_proxy.fail(2, mode="503", match=is_put)
    s3_store.upload(tmp_path / "out.mp4", name)
    assert [s for _, _, s in moto_proxy.requests("PUT", name)] == [503, 503, 200]
    assert http_get(s3_store.link(name).url)[1] == data

    other = unique()
    moto_proxy.fail(100, mode="after", match=lambda m, p: m == "PUT" and other in p)
    with pytest.raises(AvatarError) as ei:
        s3_store.upload(tmp_path / "out.mp4", other)
    assert ei.value.code == "upload_failed" and "HTTP 503" in ei.value.message
    assert len(moto_proxy.requests("PUT", other)) == FAST_RETRY["max_attempts"]
    assert s3_store.exists(other) is False  # moto kept each PUT; cleanup removed it
    for text in [repr(s3_store), str(ei.value), *[r.getMessage() for r in caplog.records]]:
        assert S3_SECRET not in text


def test_s3_public_base_url(moto_proxy, clean_env):
    settings = Settings(bucket_endpoint_url=moto_proxy.url, bucket_name="pub", bucket_secret_access_key=S3_SECRET)
    with pytest.raises(AvatarError) as ei:
        S3Store(settings)  # half a key pair is a configuration error, named but not echoed
    assert ei.value.code == "upload_failed" and S3_SECRET not in str(ei.value)
    settings = Settings(
        bucket_endpoint_url=moto_proxy.url,
        bucket_name="pub",
        bucket_access_key_id="AKIAEXAMPLEEXAMPLE",
        bucket_secret_access_key=S3_SECRET,
    )
    store = S3Store(settings, public_base_url="https://cdn.example.test/media/")
    obj = store.link("a b.mp4")
    assert obj == StoredObject("avatar-outputs/a b.mp4", "https://cdn.example.test/media/avatar-outputs/a%20b.mp4", None, True)
