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




def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(out, "PNG")
    return out.getvalue()


def test_listing_and_serving_pick_the_same_file(tmp_path, portrait_png):
    """#22 item 10: an upper-case suffix is servable, alice.jpg beside alice.png serves what is listed, and
    non-images, oversized files and decompression bombs are neither listed nor served."""
    root = tmp_path / "avatars"
    root.mkdir()
    (root / "UPPER.PNG").write_bytes(portrait_png)
    (root / "alice.jpg").write_bytes(b"\xff\xd8 a jpeg in name only")  # sorts first by name, not an image
    (root / "alice.png").write_bytes(portrait_png)
    (root / "bob.jpg").write_bytes(portrait_png)  # a PNG named .jpg: an image all the same
    (root / "bob.webp").write_bytes(_png(8, 8))
    (root / "notimage.png").write_text("hello")
    (root / "big.png").write_bytes(portrait_png + b"\0" * 2000)
    (root / "bomb.png").write_bytes(_png(3000, 3000))  # 9 MP, tiny on disk
    settings = Settings(avatars_dir=root, media_bucket=None, model_root=tmp_path / "none",
                        max_image_bytes=len(portrait_png) + 1000, max_image_pixels=1_000_000)
    listed = {a.id: a.file for a in avatars.list_avatars(settings)}
    assert listed == {"UPPER": "UPPER.PNG", "alice": "alice.png", "bob": "bob.jpg"}
    for avatar_id, name in listed.items():
        assert avatars.load_avatar_image(avatar_id, settings) == (root / name).read_bytes()
    for avatar_id in ("notimage", "big", "bomb", "upper"):
        with pytest.raises(AvatarError, match="unknown avatar_id"):
            avatars.load_avatar_image(avatar_id, settings)


def test_bucket_listing_and_serving_agree(monkeypatch, tmp_path, portrait_png):
    store = _MemoryStore({"avatars/Carol.JPG": portrait_png, "avatars/dave.webp": b"w" * 10,
                          "avatars/dave.jpeg": portrait_png, "avatars/huge.png": b"x" * (len(portrait_png) + 1)})
    monkeypatch.setattr(delivery, "get_store", lambda settings: store)
    settings = Settings(avatars_dir=None, model_root=tmp_path, max_image_bytes=len(portrait_png))
    listed = {a.id: a.file for a in avatars.list_avatars(settings)}
    assert listed == {"Carol": "avatars/Carol.JPG", "dave": "avatars/dave.jpeg"}
    assert avatars.load_avatar_image("Carol", settings) == portrait_png
    assert avatars.load_avatar_image("dave", settings) == portrait_png
