"""Decoding portraits and speech, and writing MP4s that browsers play in sync."""

import io

import numpy as np
import pytest
from PIL import Image

from avatar_engine.audio.frames import frame_count
from avatar_engine.audio.io import ANALYSIS_RATE, AudioClip, decode_audio
from avatar_engine.errors import AvatarError
from avatar_engine.media.encode import Mp4Writer, pick_encoder
from avatar_engine.media.image import decode_image, fit_image, output_size
from tests.support.media import encode_audio, probe_mp4, tone, wav_bytes

MAXPX = 40_000_000


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


# -- images ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1"])
def test_image_modes_become_rgb(mode):
    img = Image.new("RGB", (80, 96), (200, 100, 50)).convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "F", "I") else "PNG"
    out = decode_image(_png(img, format=fmt), max_pixels=MAXPX)
    assert out.shape == (96, 80, 3) and out.dtype == np.uint8


def test_transparent_background_is_white():
    img = Image.new("RGBA", (80, 80), (0, 0, 0, 0))
    assert decode_image(_png(img), max_pixels=MAXPX).min() == 255


def test_exif_orientation_applied():
    img = Image.new("RGB", (120, 80), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    assert decode_image(buf.getvalue(), max_pixels=MAXPX).shape[:2] == (120, 80)


def test_sixteen_bit_scaled_not_clipped():
    arr = (np.linspace(0, 65535, 100 * 100).reshape(100, 100)).astype(np.uint16)
    out = decode_image(_png(Image.fromarray(arr)), max_pixels=MAXPX)
    assert out.max() == 255 and out.min() == 0


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (70, 70), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), max_pixels=MAXPX)
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 50


@pytest.mark.parametrize("data, code", [
    (b"", "unsupported_media"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "unsupported_media"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "unsupported_media"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "unsupported_media"),
    (b"hello world", "unsupported_media"),
])
def test_bad_images(data, code):
    with pytest.raises(AvatarError) as err:
        decode_image(data, max_pixels=MAXPX)
    assert err.value.code == code


def test_truncated_jpeg(portrait_png):
    jpeg = _png(Image.open(io.BytesIO(portrait_png)).convert("RGB"), format="JPEG")
    with pytest.raises(AvatarError) as err:
        decode_image(jpeg[: len(jpeg) // 2], max_pixels=MAXPX)
    assert err.value.code == "unsupported_media"


def test_tiny_and_bomb_images():
    with pytest.raises(AvatarError) as err:
        decode_image(_png(Image.new("RGB", (1, 1))), max_pixels=MAXPX)
    assert err.value.code == "invalid_input"
    bomb = _png(Image.new("1", (20000, 20000)))
    assert len(bomb) < 200_000
    with pytest.raises(AvatarError) as err:
        decode_image(bomb, max_pixels=MAXPX)
    assert err.value.code == "input_too_large"


@pytest.mark.parametrize("w, h, side, expected", [(512, 512, 512, (512, 512)), (640, 480, 512, (512, 384)),
                                                   (333, 500, 256, (170, 256)), (100, 3000, 1024, (34, 1024))])
def test_output_size_even(w, h, side, expected):
    assert output_size(w, h, side) == expected


def test_fit_image_resizes(portrait_png):
    img = decode_image(portrait_png, max_pixels=MAXPX)
    assert fit_image(img, 256).shape == (256, 256, 3)


# -- audio -------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, codec, rate", [("mp3", "libmp3lame", 44100), ("ipod", "aac", 48000),
                                              ("ogg", "libopus", 48000), ("adts", "aac", 22050),
                                              ("flac", "flac", 16000), ("wav", "pcm_s16le", 8000)])
def test_audio_containers(fmt, codec, rate):
    data = encode_audio(tone(1.5, rate), rate, fmt, codec)
    clip = decode_audio(data, max_seconds=300, min_seconds=0.2)
    assert abs(clip.duration_s - 1.5) < 0.1
    assert clip.analysis.dtype == np.float32 and abs(len(clip.analysis) / ANALYSIS_RATE - clip.duration_s) < 0.05
    assert clip.rate == rate  # the output keeps the source rate, not the 16 kHz analysis copy
    assert np.abs(clip.analysis).max() > 0.1


def test_output_keeps_source_quality_but_caps_channels_and_rate():
    clip = decode_audio(wav_bytes(tone(1.0, 44100, channels=2), 44100), max_seconds=300, min_seconds=0.2)
    assert (clip.rate, clip.channels) == (44100, 2)
    clip = decode_audio(wav_bytes(tone(0.5, 48000, channels=8), 48000), max_seconds=300, min_seconds=0.2)
    assert clip.channels == 2
    clip = decode_audio(wav_bytes(tone(0.5, 192000), 192000), max_seconds=300, min_seconds=0.2)
    assert clip.rate == 48000 and abs(clip.duration_s - 0.5) < 0.02


@pytest.mark.parametrize("seconds, code", [(0.0, "invalid_input"), (0.1, "invalid_input"), (4.0, "input_too_large")])
def test_audio_duration_limits(seconds, code):
    data = wav_bytes(tone(seconds, 16000) if seconds else np.zeros((1, 0), np.float32), 16000)
    with pytest.raises(AvatarError) as err:
        decode_audio(data, max_seconds=3.0, min_seconds=0.2)
    assert err.value.code == code if seconds else err.value.code in (code, "unsupported_media")


@pytest.mark.parametrize("data", [b"", b"RIFF\x00\x00\x00\x00WAVE", b"ID3\x03\x00\x00\x00\x00\x00\x00", b"plain text",
                                  b"\x89PNG\r\n\x1a\n"])
def test_bad_audio(data):
    with pytest.raises(AvatarError) as err:
        decode_audio(data, max_seconds=300, min_seconds=0.2)
    assert err.value.code in ("unsupported_media", "invalid_input")


# -- encoding ----------------------------------------------------------------------------

def test_nvenc_absent_falls_back_to_libx264():
    assert pick_encoder("auto") == "libx264"
    assert pick_encoder("h264_nvenc") == "libx264"


@pytest.mark.parametrize("mode", ["real_time", "high_quality"])
def test_av_alignment_by_decoding(tmp_path, mode):
    """A click at t=1 s and a white frame at t=1 s must coincide in the decoded file (AAC priming
    compensated), the streams must last the same to within a frame, and moov precedes mdat."""
    rate, fps, dur = 16000, 25, 2.5
    samples = np.zeros((1, int(rate * dur)), np.float32)
    samples[0, rate:rate + 400] = 0.8 * np.sin(np.arange(400) * 2 * np.pi * 1000 / rate)
    clip = AudioClip(analysis=samples[0], samples=samples, rate=rate, duration_s=dur)
    out = tmp_path / "a.mp4"
    w = Mp4Writer(out, width=128, height=96, fps=fps, audio=clip, mode=mode, encoder="libx264")
    n = frame_count(dur, fps)
    for i in range(n):
        w.write(np.full((96, 128, 3), 255 if i == fps else 0, np.uint8))
    w.close()
    info = probe_mp4(out)
    assert info["boxes"].index("moov") < info["boxes"].index("mdat")
    assert (info["video_codec"], info["pix_fmt"], info["width"], info["height"]) == ("h264", "yuv420p", 128, 96)
    assert info["frames"] == n and info["audio_codec"] == "aac" and info["audio_rate"] == rate
    assert abs(info["audio_start"]) < 1e-3
    onset = np.argmax(np.abs(info["audio"]) > 0.2) / rate
    assert abs(onset - 1.0) < 0.005, f"audio click decoded at {onset:.4f} s (AAC priming not compensated?)"
    assert abs(info["video_duration"] - info["audio_duration"]) <= 1.0 / fps + 0.03


def test_frame_count_covers_audio():
    assert frame_count(5.921, 25) == 149 and frame_count(2.0, 25) == 50 and frame_count(0.01, 25) == 1


def test_writer_rejects_wrong_frames(tmp_path):
    clip = AudioClip(analysis=np.zeros(16000, np.float32), samples=np.zeros((1, 16000), np.float32), rate=16000,
                     duration_s=1.0)
    w = Mp4Writer(tmp_path / "x.mp4", width=64, height=64, fps=25, audio=clip)
    with pytest.raises(AvatarError):
        w.write(np.zeros((32, 64, 3), np.uint8))
    w.abort()
