"""Issue #22 item 7: the CLI's local files are checked before reading, and a bad driving video is a
structured error with a nonzero exit."""

from __future__ import annotations

import os

from avatar_engine.cli import main
from tests.support.media import ASSETS

FACE = str(ASSETS / "astronaut_512.png")
AUDIO = str(ASSETS / "short_16k.wav")


def test_face_from_dev_zero_is_a_structured_error(tmp_path, capsys):
    code = main(["render", "--face", "/dev/zero", "--audio", AUDIO, "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code == 1 and "error [invalid_input]" in err and "not a regular file" in err
    assert "Traceback" not in err


def test_oversized_and_empty_local_files(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(30 * 1024 * 1024)  # sparse: over MAX_IMAGE_BYTES without writing it
    assert main(["render", "--face", str(big), "--audio", AUDIO, "--out", str(tmp_path / "o.mp4")]) == 1
    assert "error [input_too_large]" in capsys.readouterr().err
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert main(["render", "--face", FACE, "--audio", str(empty), "--out", str(tmp_path / "o.mp4")]) == 1
    assert "error [invalid_input]" in capsys.readouterr().err


def test_random_bytes_as_reference_video_fail_before_rendering(tmp_path, capsys):
    video = tmp_path / "random.mp4"
    video.write_bytes(os.urandom(4096))
    out = tmp_path / "o.mp4"
    code = main(["render", "--face", FACE, "--audio", AUDIO, "--reference-video", str(video), "--out", str(out),
                 "--size", "256"])
    err = capsys.readouterr().err
    assert code == 1 and "error [unsupported_media]" in err and "driving video" in err
    assert not out.exists()
