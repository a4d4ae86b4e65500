"""Issue #22 item 4: `health` says when browser playback of bucket URLs will fail (bucket CORS), cheaply."""

from __future__ import annotations

import time

import pytest

from avatar_engine.media import delivery
from avatar_engine.serving import health
from avatar_engine.settings import Settings
from avatar_engine.storage import GCSStore, S3Store
from tests.support.gcs import gcs_emulator, service_account_json


@pytest.fixture(autouse=True)
def _fresh_cache():
    health._playback_cache.clear()
    yield
    health._playback_cache.clear()


def test_no_bucket_means_inline_playback(tmp_path):
    report = health.browser_playback(Settings(model_root=tmp_path, media_bucket=None))
    assert report["ok"] is True and report["bucket"] is False


def test_gcs_bucket_without_and_with_cors(tmp_path, monkeypatch):
    with gcs_emulator("cors-bucket") as port:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        settings = Settings(model_root=tmp_path, media_bucket="cors-bucket",
                            gcs_credentials_json=service_account_json("cors"))
        store = GCSStore(settings)
        monkeypatch.setattr(delivery, "get_store", lambda s: store)
        report = health.browser_playback(settings)
        assert report["ok"] is False and "blocked by CORS" in report["reason"] and "DEPLOY.md" in report["reason"]

        bucket = store._client.get_bucket("cors-bucket")
        bucket.cors = [{"origin": ["https://app.example.com"], "method": ["GET", "HEAD"],
                        "responseHeader": ["Content-Type", "Range"], "maxAgeSeconds": 3600}]
        bucket.patch()
        assert health.browser_playback(settings)["ok"] is False  # cached: health stays cheap
        health._playback_cache.clear()
        report = health.browser_playback(settings)
        assert report["ok"] is True and report["origins"] == ["https://app.example.com"]


def test_s3_bucket_cors_unset_set_and_unreadable(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    settings = Settings(model_root=tmp_path, bucket_endpoint_url="https://s3.us-east-1.amazonaws.com",
                        bucket_name="clips", bucket_access_key_id="k", bucket_secret_access_key="s")
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
        client.create_bucket(Bucket="clips")
        store = S3Store(settings, client=client)
        monkeypatch.setattr(delivery, "get_store", lambda s: store)
        assert health.browser_playback(settings)["ok"] is False
        client.put_bucket_cors(Bucket="clips", CORSConfiguration={"CORSRules": [
            {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"], "AllowedHeaders": ["*"]}]})
        health._playback_cache.clear()
        assert health.browser_playback(settings) | {"checked_at": 0} == {
            "bucket": True, "ok": True, "origins": ["*"], "checked_at": 0}

    def denied(timeout=None):
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetBucketCors")

    monkeypatch.setattr(store, "cors_rules", denied)
    health._playback_cache.clear()
    report = health.browser_playback(settings)
    assert report["ok"] is None and "could not be read (ClientError)" in report["reason"]


def test_health_reports_playback_and_stays_fast(tmp_path, monkeypatch):
    calls = []

    class Slow:
        def cors_rules(self, timeout=None):
            calls.append(1)
            time.sleep(0.2)
            return []

    monkeypatch.setattr(delivery, "get_store", lambda s: Slow())
    settings = Settings(model_root=tmp_path)
    first = health.health(settings)["browser_playback"]
    t0 = time.perf_counter()
    second = health.health(settings)["browser_playback"]
    assert first == second and first["ok"] is False and len(calls) == 1
    assert time.perf_counter() - t0 < 0.2
