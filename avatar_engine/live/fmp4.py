"""A minimal fragmented-MP4 writer for live streams: one init segment, then tiny `moof`+`mdat` fragments.

FFmpeg's mp4 muxer interleaves and buffers packets, which holds a fragment back until later packets
arrive; live output needs each video frame out the moment it is encoded. This writer puts exactly the
samples it is given into each fragment (H.264 in AVCC form, AAC raw frames), so a fragment leaves as
soon as its frame exists. Media Source Extensions (browsers) and FFmpeg read the result.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_KEY_FLAGS = 0x02000000  # sample_depends_on = 2: a sync sample
_DELTA_FLAGS = 0x01010000  # depends on others, not a sync sample


def box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *parts)


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (start codes 00 00 01 or 00 00 00 01)."""
    units, i, n = [], 0, len(data)
    starts = []
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, start in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        unit = data[start:end]
        if k + 1 < len(starts) and unit.endswith(b"\x00"):
            unit = unit.rstrip(b"\x00")  # the 4-byte start code's leading zero (trailing_zero_8bits)
        if unit:
            units.append(unit)
    return units


def to_avcc(units: list[bytes]) -> bytes:
    """Length-prefixed NAL units without parameter sets or delimiters (those live in `avcC`)."""
    return b"".join(struct.pack(">I", len(u)) + u for u in units if u[0] & 0x1F not in (7, 8, 9))


@dataclass
class Sample:
    data: bytes
    duration: int  # in the track's timescale
    keyframe: bool = True


@dataclass
class TrackRun:
    """One track's samples in a fragment, starting at `decode_time` (track timescale)."""

    track_id: int
    decode_time: int
    samples: list[Sample]


def _avc_entry(width: int, height: int, sps: bytes, pps: bytes) -> bytes:
    avcc = box(b"avcC", bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]), struct.pack(">H", len(sps)), sps,
               b"\x01", struct.pack(">H", len(pps)), pps)
    return box(b"avc1", b"\x00" * 6, struct.pack(">H", 1), b"\x00" * 16, struct.pack(">HH", width, height),
               struct.pack(">IIIH", 0x480000, 0x480000, 0, 1), b"\x00" * 32, struct.pack(">Hh", 0x18, -1), avcc)


def _descriptor(tag: int, body: bytes) -> bytes:
    return bytes([tag, len(body)]) + body


def _aac_entry(rate: int, channels: int, config: bytes) -> bytes:
    decoder = _descriptor(0x04, bytes([0x40, 0x15]) + struct.pack(">I", 0)[1:] + struct.pack(">II", 0, 0)
                          + _descriptor(0x05, config))
    esds = full_box(b"esds", 0, 0, _descriptor(0x03, struct.pack(">HB", 0, 0) + decoder + _descriptor(0x06, b"\x02")))
    return box(b"mp4a", b"\x00" * 6, struct.pack(">H", 1), b"\x00" * 8, struct.pack(">HHHHI", channels, 16, 0, 0,
                                                                                    rate << 16), esds)


def _trak(track_id: int, timescale: int, handler: bytes, media_header: bytes, entry: bytes,
          width: int = 0, height: int = 0) -> bytes:
    volume = 0x0100 if handler == b"soun" else 0
    tkhd = full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, track_id, 0, 0), b"\x00" * 8,
                    struct.pack(">hhhH", 0, 0, volume, 0), _MATRIX, struct.pack(">II", width << 16, height << 16))
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    name = b"VideoHandler\x00" if handler == b"vide" else b"SoundHandler\x00"
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I", 0), handler, b"\x00" * 12, name)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(b"stbl", full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
               full_box(b"stts", 0, 0, b"\x00" * 4), full_box(b"stsc", 0, 0, b"\x00" * 4),
               full_box(b"stsz", 0, 0, b"\x00" * 8), full_box(b"stco", 0, 0, b"\x00" * 4))
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def init_segment(*, width: int, height: int, video_timescale: int, sps: bytes, pps: bytes,
                 audio_rate: int, audio_channels: int, audio_config: bytes) -> bytes:
    """`ftyp` + `moov`: track 1 H.264 video, track 2 AAC audio, both fragmented (`mvex`)."""
    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isom", b"iso6", b"avc1", b"mp41")
    mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x0100), b"\x00" * 10,
                    _MATRIX, b"\x00" * 24, struct.pack(">I", 3))
    video = _trak(1, video_timescale, b"vide", full_box(b"vmhd", 0, 1, b"\x00" * 8),
                  _avc_entry(width, height, sps, pps), width, height)
    audio = _trak(2, audio_rate, b"soun", full_box(b"smhd", 0, 0, b"\x00" * 4),
                  _aac_entry(audio_rate, audio_channels, audio_config))
    mvex = box(b"mvex", *(full_box(b"trex", 0, 0, struct.pack(">IIIII", tid, 1, 0, 0, 0)) for tid in (1, 2)))
    return ftyp + box(b"moov", mvhd, video, audio, mvex)


def _traf(run: TrackRun, data_offset: int) -> bytes:
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", run.track_id))  # default-base-is-moof
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", run.decode_time))
    rows = b"".join(struct.pack(">III", s.duration, len(s.data), _KEY_FLAGS if s.keyframe else _DELTA_FLAGS)
                    for s in run.samples)
    trun = full_box(b"trun", 0, 0x000701, struct.pack(">Ii", len(run.samples), data_offset), rows)
    return box(b"traf", tfhd, tfdt, trun)


def fragment(sequence: int, runs: list[TrackRun]) -> bytes:
    """One `moof` + `mdat` holding the given samples (empty runs are left out)."""
    runs = [r for r in runs if r.samples]
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
    moof_size = len(box(b"moof", mfhd, *(_traf(r, 0) for r in runs)))
    offset, trafs = moof_size + 8, []
    for run in runs:
        trafs.append(_traf(run, offset))
        offset += sum(len(s.data) for s in run.samples)
    payload = b"".join(s.data for r in runs for s in r.samples)
    return box(b"moof", mfhd, *trafs) + box(b"mdat", payload)
