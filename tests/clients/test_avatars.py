"""Named avatars: ids that try to leave the folder are refused, the folder and a bucket are listed,
a request with `avatar_id` renders through the real local server, faces are detected once per image."""

from __future__ import annotations

import base64

import pytest

from avatar_engine.clients.endpoint import AvatarClient, ClientConfig
from avatar_engine.errors import AvatarError
from avatar_engine.media import avatars, delivery
from avatar_engine.schema import parse_request
from avatar_engine.settings import Settings
from avatar_engine.storage import BucketStore, RetryPolicy
from tests.support.media import probe_mp4

TRICKS = {
    "../alice": "path separators",
    "..": "'..'",
    "a..b": "'..'",
    "/etc/passwd": "absolute paths",
    "C:evil": "absolute paths",
    "team/alice": "path separators",
    "..%2Falice": "URL-encoded",
    "alice%00": "URL-encoded",
    "%2e%2e": "URL-encoded",
    "..\\alice": "backslashes",
    "alice\x00": "control characters",
    ".hidden": "letters, digits",
    "": "non-empty",
}


@pytest.fixture
def dir_settings(avatars_dir, tmp_path) -> Settings:
    return Settings(avatars_dir=avatars_dir, media_bucket=None, model_root=tmp_path / "none")


@pytest.mark.parametrize("avatar_id", list(TRICKS))
def test_path_tricks_are_refused(avatar_id, dir_settings):
    with pytest.raises(AvatarError) as caught:
        avatars.load_avatar_image(avatar_id, dir_settings)
    assert caught.value.code == "invalid_input" and TRICKS[avatar_id] in caught.value.message
    if avatar_id:  # the request is refused at validation too, before anything is read
        with pytest.raises(AvatarError) as caught:
            parse_request({"avatar_id": avatar_id, "audio_b64": "aGk="})
        assert caught.value.code == "invalid_input" and "avatar_id" in caught.value.message


def test_symlink_out_of_the_folder_is_refused_and_not_listed(dir_settings):
    with pytest.raises(AvatarError, match="outside AVATARS_DIR") as caught:
        avatars.load_avatar_image("evil", dir_settings)
    assert caught.value.code == "invalid_input"
    listed = [a.to_dict() for a in avatars.list_avatars(dir_settings)]
    assert listed == [{"id": "alice", "source": "dir", "file": "alice.png",
                       "size_bytes": (dir_settings.avatars_dir / "alice.png").stat().st_size}]
    with pytest.raises(AvatarError, match="unknown avatar_id 'bob'"):
        avatars.load_avatar_image("bob", dir_settings)


def test_avatar_id_is_exclusive_with_image():
    with pytest.raises(AvatarError, match="exactly one of image_url or image_b64 or avatar_id"):
        parse_request({"avatar_id": "alice", "image_b64": "aGk=", "audio_b64": "aGk="})
    assert parse_request({"avatar_id": "alice", "audio_b64": "aGk="}).avatar_id == "alice"


class _MemoryStore(BucketStore):
    """A bucket held in a dict: the real `BucketStore` list/read flows over in-memory primitives."""

    provider = "memory"

    def __init__(self, objects):
        self.objects, self.bucket_name, self.prefix, self.policy = objects, "mem", "avatar-outputs/", RetryPolicy()

    def _retryable(self, exc):
        return False

    def _is_missing(self, exc):
        return isinstance(exc, KeyError)

    def _get(self, key, max_bytes, timeout):
        return self.objects[key]

    def _list(self, key_prefix, timeout):
        return [(k, len(v)) for k, v in self.objects.items() if k.startswith(key_prefix) and "/" not in k[len(key_prefix):]]


def test_bucket_avatars(monkeypatch, tmp_path, portrait_png):
    store = _MemoryStore({"avatars/bob.jpg": portrait_png, "avatars/deep/x.png": b"no", "avatars/r.txt": b"no",
                          "other/carol.png": b"no"})
    monkeypatch.setattr(delivery, "get_store", lambda settings: store)
    settings = Settings(avatars_dir=None, model_root=tmp_path)
    assert [(a.id, a.source, a.file, a.size_bytes) for a in avatars.list_avatars(settings)] == [
        ("bob", "bucket", "avatars/bob.jpg", len(portrait_png))]
    assert avatars.load_avatar_image("bob", settings) == portrait_png
    with pytest.raises(AvatarError, match="unknown avatar_id 'carol'"):
        avatars.load_avatar_image("carol", settings)


def test_render_by_avatar_id_through_the_local_server(local_api, short_wav):
    client = AvatarClient(ClientConfig(base_url=local_api))
    payload = {"avatar_id": "alice", "audio_b64": base64.b64encode(short_wav).decode(), "size": 256,
               "engine": "parametric"}
    result = client.render(payload, timeout_s=120)
    assert probe_mp4(base64.b64decode(result.video_b64))["frames"] == 53
    failed = client.run_sync({**payload, "avatar_id": "evil"})
    assert failed.error["code"] == "invalid_input"


