"""Input fetching: schemes, SSRF guard (every redirect hop), caps, timeouts, base64 forms."""

import base64
import time

import pytest

from avatar_engine.errors import AvatarError
from avatar_engine.media.fetch import decode_base64, fetch_url, load_input
from avatar_engine.settings import Settings


def _fetch(url, settings, max_bytes=20_000_000):
    return fetch_url(url, field="image_url", max_bytes=max_bytes, settings=settings)


def test_fetch_ok(hostile, settings, portrait_png):
    assert _fetch(hostile.url("/image.png"), settings).data == portrait_png


def test_redirects_followed_up_to_the_limit(hostile, settings, portrait_png):
    assert _fetch(hostile.url("/hop/3"), settings).data == portrait_png
    with pytest.raises(AvatarError) as err:
        _fetch(hostile.url("/hop/4"), settings)
    assert err.value.code == "fetch_failed" and "redirects" in err.value.message


@pytest.mark.parametrize("path, code", [
    ("/nope", "fetch_failed"),
    ("/500", "fetch_failed"),
    ("/loop", "fetch_failed"),
    ("/to-metadata", "fetch_failed"),
    ("/to-private", "fetch_failed"),
    ("/to-file", "fetch_failed"),
    ("/empty", "fetch_failed"),
    ("/short-body", "fetch_failed"),
    ("/huge-declared", "input_too_large"),
    ("/endless", "input_too_large"),
])
def test_hostile_routes(hostile, settings, path, code):
    start = time.monotonic()
    with pytest.raises(AvatarError) as err:
        _fetch(hostile.url(path), settings, max_bytes=1_000_000)
    assert err.value.code == code, err.value.message
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("path", ["/drip", "/stall"])
def test_slow_servers_hit_the_deadline(hostile, settings, path):
    start = time.monotonic()
    with pytest.raises(AvatarError) as err:
        _fetch(hostile.url(path), settings)
    assert err.value.code == "fetch_failed"
    assert time.monotonic() - start < settings.fetch_total_timeout_s + settings.fetch_read_timeout_s + 0.5


def test_loopback_refused_by_default(hostile):
    with pytest.raises(AvatarError) as err:
        _fetch(hostile.url("/image.png"), Settings())
    assert err.value.code == "fetch_failed" and "non-public" in err.value.message


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://0.0.0.0/",
    "http://10.0.0.1/x",
    "http://192.168.1.1/x",
    "http://[::1]/x",
    "http://localhost/x",
])
def test_private_and_metadata_addresses_refused(url):
    with pytest.raises(AvatarError) as err:
        _fetch(url, Settings())
    assert err.value.code == "fetch_failed"


def test_metadata_range_closed_even_when_private_allowed(settings):
    with pytest.raises(AvatarError) as err:
        _fetch("http://169.254.169.254/latest/meta-data/", settings)
    assert err.value.code == "fetch_failed"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gs://bucket/a.png",
                                 "https://user:pw@example.com/a.png", "http:///nohost", "javascript:alert(1)"])
def test_bad_urls(url, settings):
    with pytest.raises(AvatarError) as err:
        _fetch(url, settings)
    assert err.value.code == "invalid_input"


def test_base64_forms(portrait_png):
    plain = base64.b64encode(portrait_png).decode()
    assert decode_base64(plain, field="image_b64", max_bytes=10 ** 7) == portrait_png
    assert decode_base64("data:image/png;base64," + plain, field="image_b64", max_bytes=10 ** 7) == portrait_png
    wrapped = "\n".join(plain[i:i + 76] for i in range(0, len(plain), 76))
    assert decode_base64(wrapped, field="image_b64", max_bytes=10 ** 7) == portrait_png
    urlsafe = base64.urlsafe_b64encode(portrait_png).decode().rstrip("=")
    assert decode_base64(urlsafe, field="image_b64", max_bytes=10 ** 7) == portrait_png


@pytest.mark.parametrize("text, code", [
    ("not base64 at all!!", "invalid_input"),
    ("data:image/png,rawtext", "invalid_input"),
    ("data:;base64", "invalid_input"),
    ("", "invalid_input"),
    ("QUFB" * 1000, "input_too_large"),
])
def test_bad_base64(text, code):
    with pytest.raises(AvatarError) as err:
        decode_base64(text, field="audio_b64", max_bytes=1000)
    assert err.value.code == code


def test_load_input_applies_per_kind_caps(settings):
    small = settings.model_copy(update={"max_audio_bytes": 10})
    with pytest.raises(AvatarError) as err:
        load_input(None, base64.b64encode(b"x" * 100).decode(), kind="audio", settings=small)
    assert err.value.code == "input_too_large"
