"""The request contract: sources, aliases, ranges, unknown keys, all as `invalid_input`."""

import pytest

from avatar_engine.errors import AvatarError
from avatar_engine.schema import parse_request

BASE = {"image_b64": "aW1n", "audio_url": "https://example.com/a.wav"}


def test_defaults():
    r = parse_request(BASE)
    assert (r.engine, r.quality_mode, r.fps, r.size, r.on_no_face, r.output.delivery) == (
        "auto", "auto", 25, 512, "error", "auto")


def test_driver_is_an_alias_of_engine():
    assert parse_request({**BASE, "driver": "still"}).engine == "still"
    assert parse_request({**BASE, "engine": "still", "driver": "still"}).engine == "still"


@pytest.mark.parametrize("payload, fragment", [
    ({"image_b64": "x"}, "exactly one of audio_url or audio_b64"),
    ({**BASE, "image_url": "https://example.com/i.png"}, "exactly one of image_url or image_b64"),
    ({**BASE, "fps": -1}, "fps"),
    ({**BASE, "fps": 61}, "fps"),
    ({**BASE, "size": 10 ** 9}, "size"),
    ({**BASE, "size": "big"}, "size"),
    ({**BASE, "engine": "nope"}, "engine"),
    ({**BASE, "colour": "red"}, "unknown field 'colour'"),
    ({**BASE, "output": {"delivery": "ftp"}}, "delivery"),
    ({**BASE, "output": {"delivery": "path", "name": "../../etc/x.mp4"}}, "name"),
    ({**BASE, "engine": "still", "driver": "parametric"}, "either 'engine' or 'driver'"),
    ({**BASE, "seed": -3}, "seed"),
])
def test_invalid_requests(payload, fragment):
    with pytest.raises(AvatarError) as err:
        parse_request(payload)
    assert err.value.code == "invalid_input"
    assert fragment in err.value.message


@pytest.mark.parametrize("payload", [None, "text", 3, ["a"]])
def test_non_object_input(payload):
    with pytest.raises(AvatarError) as err:
        parse_request(payload)
    assert err.value.code == "invalid_input"


def test_all_problems_reported_at_once():
    with pytest.raises(AvatarError) as err:
        parse_request({**BASE, "fps": 0, "size": 0, "bogus": 1})
    assert len(err.value.details["fields"]) == 3


def test_options_digest_ignores_sources_and_delivery():
    a = parse_request({**BASE, "seed": 1})
    b = parse_request({"image_url": "https://x/y.png", "audio_b64": "eA==", "seed": 1, "output": {"delivery": "base64"}})
    c = parse_request({**BASE, "seed": 2})
    assert a.options_digest() == b.options_digest() != c.options_digest()
