"""Output checks on a rendered MP4: it plays to the end, lasts as long as its audio, carries H.264 + AAC,
and has its index (`moov`) before the media (`mdat`) so a browser starts playing before the download ends."""

from __future__ import annotations

import struct
from pathlib import Path

import av

#: the video may run up to one frame past the audio (frames = ceil(duration x fps)), plus container rounding
DURATION_SLACK_S = 0.05


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types in file order (`ftyp`, `moov`, `mdat`, ...)."""
    boxes = []
    with open(path, "rb") as f:
        while len(boxes) < 64:
            header = f.read(8)
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0] - 8
            elif size == 0:  # to the end of the file
                boxes.append(kind.decode("latin-1"))
                break
            boxes.append(kind.decode("latin-1"))
            f.seek(size - 8, 1)
    return boxes


def _decode_all(path: Path) -> dict:
    """Decode every video frame and audio frame; a file that stops decoding does not play."""
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        info = {"video_codec": video.codec_context.name if video else None,
                "audio_codec": audio.codec_context.name if audio else None,
                "fps": float(video.average_rate) if video and video.average_rate else None}
        frames, audio_s = 0, 0.0
        streams = [s for s in (video, audio) if s is not None]
        for frame in container.decode(*streams):
            if isinstance(frame, av.VideoFrame):
                frames += 1
            else:
                audio_s += frame.samples / float(frame.sample_rate)
    info.update(frames=frames, audio_s=audio_s)
    return info


def output_checks(path: Path, expected_audio_s: float | None) -> dict:
    """`plays`, `duration_ok`, `h264_aac`, `faststart` (booleans) with the figures they come from."""
    try:
        info = _decode_all(path)
        plays = info["frames"] > 0
    except (av.FFmpegError, OSError, IndexError) as exc:
        return {"plays": False, "duration_ok": False, "h264_aac": False, "faststart": False,
                "problem": f"{type(exc).__name__}: {exc}"}
    fps = info["fps"] or 25.0
    video_s = info["frames"] / fps
    audio_s = expected_audio_s if expected_audio_s is not None else info["audio_s"]
    boxes = top_level_boxes(path)
    faststart = "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")
    return {
        "plays": plays,
        "duration_ok": -DURATION_SLACK_S <= video_s - audio_s <= 1.0 / fps + DURATION_SLACK_S,
        "h264_aac": info["video_codec"] == "h264" and info["audio_codec"] == "aac",
        "faststart": faststart,
        "video_s": round(video_s, 3), "audio_s": round(audio_s, 3), "frames": info["frames"], "fps": fps,
        "video_codec": info["video_codec"], "audio_codec": info["audio_codec"],
    }


CHECK_NAMES = ("plays", "duration_ok", "h264_aac", "faststart")
