"""Live output while a job renders (STREAM_OUTPUT=true): HLS with fMP4 segments of about 2 s.

The video is encoded once: `Mp4Writer` hands a copy of every H.264 packet to `HlsTee`, which muxes it
with its own AAC track through FFmpeg's `hls` muxer into the job's temp folder (a keyframe every
`SEGMENT_S`, so segments cut there). Each finished segment goes to a `LiveOutput`:

* with a bucket (`BucketLive`): the playlist URL is the first event, before any frame exists; each
  segment is uploaded (in order, on one uploader thread so rendering does not wait) and the playlist
  re-uploaded listing signed segment URLs; the last playlist carries `#EXT-X-ENDLIST`. A failed,
  timed-out or cancelled job deletes every object it uploaded.
* without one (`InlineLive`): the fMP4 bytes inline, base64, in chunks of at most `INLINE_CHUNK_BYTES`
  (well under the SDK's 1 MB stream-chunk limit); init + all chunks concatenated is a playable MP4. The
  chunks are the delivery: the last item says how many there were (`video_stream`), it does not repeat them.

Audio and video start together: the AAC priming keeps its negative timestamps and the audio track's edit
list trims it (as in the MP4), so no track is shifted and `ffmpeg -c copy` keeps both at 0. A cache hit
streams the cached MP4 the same way (`replay`: its packets copied into new segments).

Events are plain dicts handed to `emit` (the generator handler yields them); the job's last yield is
the usual result dict.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import queue
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

from ..audio.io import AudioClip
from ..serving.deadline import Deadline

log = logging.getLogger(__name__)

SEGMENT_S = 2.0
INLINE_CHUNK_BYTES = 384 * 1024  # 512 KiB of base64: half the SDK's stream-chunk limit
_AUDIO_LEAD_S = 0.25  # audio muxed this far ahead of the video, so the interleaver never holds a keyframe
_AAC_FRAME = 1024

Emit = Callable[[dict], None]


@dataclass(frozen=True)
class Segment:
    index: int
    path: Path
    duration_s: float


def keyframe_interval(fps: int) -> int:
    return max(1, round(SEGMENT_S * fps))


def _parse_playlist(text: str) -> list[tuple[float, str]]:
    """(duration, file name) of the segments FFmpeg's playlist lists (only finished ones)."""
    out, duration = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line and not line.startswith("#") and duration is not None:
            out.append((duration, line))
            duration = None
    return out


class HlsTee:
    """FFmpeg's hls muxer fed with copies of the MP4's video packets plus its own AAC track."""

    def __init__(self, folder: Path, audio: AudioClip, fps: int, on_init: Callable[[Path], None],
                 on_segment: Callable[[Segment], None]):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._audio, self._fps = audio, fps
        self._on_init, self._on_segment = on_init, on_segment
        self._out = None
        self._vstream = self._astream = None
        self._audio_pos = 0
        self._seen = 0
        self._layout = "stereo" if audio.channels == 2 else "mono"

    @property
    def playlist(self) -> Path:
        return self.folder / "index.m3u8"

    def _open(self, template) -> None:
        self._out = av.open(str(self.playlist), "w", format="hls", options={
            "hls_time": f"{SEGMENT_S:g}", "hls_segment_type": "fmp4", "hls_playlist_type": "event",
            "hls_fmp4_init_filename": "init.mp4", "hls_segment_filename": str(self.folder / "seg%05d.m4s"),
            "hls_flags": "independent_segments+temp_file"},
            # AAC priming stays at a negative time, trimmed by the audio track's edit list (as in the MP4): shifting
            # every track by it instead would start the video 1024 samples (64 ms at 16 kHz) after the audio
            container_options={"avoid_negative_ts": "disabled"})
        self._vstream = self._out.add_stream_from_template(template)
        self._astream = self._out.add_stream("aac", rate=self._audio.rate)
        self._astream.layout = self._layout
        self._astream.bit_rate = 128_000 if self._audio.channels == 2 else 96_000

    def video(self, packet: av.Packet, template) -> None:
        """One encoded video packet (a copy, in the encoder's 1/fps time base)."""
        if self._out is None:
            self._open(template)
        end_s = float(((packet.pts or 0) + 1) * packet.time_base) if packet.time_base else 0.0
        self._feed_audio(end_s + _AUDIO_LEAD_S)
        packet.stream = self._vstream
        self._out.mux(packet)
        if packet.is_keyframe:
            self._poll()

    def _feed_audio(self, until_s: float | None) -> None:
        samples = self._audio.samples
        total = samples.shape[1]
        stop = total if until_s is None else \
            min(total, math.ceil(until_s * self._audio.rate / _AAC_FRAME) * _AAC_FRAME)
        while self._audio_pos < stop:
            end = min(stop, self._audio_pos + _AAC_FRAME * 8)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, self._audio_pos:end]), format="fltp",
                                               layout=self._layout)
            frame.sample_rate = self._audio.rate
            frame.pts = self._audio_pos
            frame.time_base = Fraction(1, self._audio.rate)
            self._out.mux(self._astream.encode(frame))
            self._audio_pos = end

    def _poll(self) -> None:
        """Hand over the segments FFmpeg's playlist newly lists (it lists a segment once it is complete)."""
        try:
            listed = _parse_playlist(self.playlist.read_text())
        except OSError:
            return
        if listed and not self._seen:  # FFmpeg writes the init segment with the first media segment
            self._on_init(self.folder / "init.mp4")
        for index in range(self._seen, len(listed)):
            duration, name = listed[index]
            self._on_segment(Segment(index, self.folder / name, duration))
        self._seen = max(self._seen, len(listed))

    def close(self) -> None:
        """Flush the audio, finish the last segment and the playlist (`#EXT-X-ENDLIST`)."""
        if self._out is None:
            return
        self._feed_audio(None)
        self._out.mux(self._astream.encode(None))
        self._out.close()
        self._out = None
        self._poll()

    def abort(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # noqa: BLE001 - the stream is being thrown away
                pass
            self._out = None


class LiveOutput:
    """Where live segments go; the pipeline calls `start`, `tee`, `finish` or `discard`."""

    def __init__(self, emit: Emit):
        self.emit = emit
        self.first_segment_at: float | None = None  # time.perf_counter() of the first playable segment
        self._tee: HlsTee | None = None
        self._attempt = 0
        self._published = False

    def start(self, *, store, name_stem: str, deadline: Deadline) -> None:
        """Called once before rendering (after the cache check)."""

    def tee(self, folder: Path, audio: AudioClip, fps: int) -> HlsTee:
        """A fresh segmenter per engine attempt; a fallback after published segments says `restart`."""
        if self._tee is not None:
            self._tee.abort()
            if self._published:
                self.emit({"event": "restart", "reason": "the engine failed; the stream starts again"})
        self._attempt += 1
        self._tee = HlsTee(folder / f"live-{self._attempt}", audio, fps, self._on_init, self._segment)
        return self._tee

    def _segment(self, segment: Segment) -> None:
        self._published = True
        self._on_segment(segment)

    def _on_init(self, path: Path) -> None: ...

    def _on_segment(self, segment: Segment) -> None: ...

    def finish(self) -> None:
        """The render is done: close the segmenter and publish what is left."""
        if self._tee is not None:
            self._tee.close()

    def discard(self) -> None:
        """The job failed or was cancelled: stop segmenting, remove what was published."""
        if self._tee is not None:
            self._tee.abort()

    def _first(self) -> None:
        if self.first_segment_at is None:
            self.first_segment_at = time.perf_counter()


class InlineLive(LiveOutput):
    """fMP4 bytes inline: `{"event": "chunk", "index", "segment", "data_b64"}`; chunk 0 starts with init.

    The chunks are the delivered video: the job's last item refers to them (`delivered()`) instead of
    repeating the MP4 as base64, so a clip over MAX_BASE64_BYTES never fails after it was streamed."""

    def __init__(self, emit: Emit):
        super().__init__(emit)
        self._init = b""
        self._chunks = 0
        self._bytes = 0
        self._segments: list[float] = []

    def tee(self, folder: Path, audio: AudioClip, fps: int) -> HlsTee:
        if self._published:  # a fallback restarts the stream: count the new one only
            self._chunks, self._bytes, self._segments = 0, 0, []
        return super().tee(folder, audio, fps)

    def finish(self) -> None:
        super().finish()
        self.emit({"event": "end", "chunks": self._chunks, "bytes": self._bytes, "segments": len(self._segments),
                   "duration_s": round(sum(self._segments), 3)})

    def delivered(self) -> dict:
        """The result's delivery fields: where the video went (the chunks above), not the video again."""
        return {"video_stream": {"format": "fmp4", "chunks": self._chunks, "segments": len(self._segments)},
                "video_bytes": self._bytes}

    def start(self, *, store, name_stem: str, deadline: Deadline) -> None:
        self.emit({"event": "stream", "format": "fmp4", "segment_s": SEGMENT_S,
                   "note": "concatenate data_b64 of every chunk in order: a fragmented MP4"})

    def _on_init(self, path: Path) -> None:
        self._init = path.read_bytes()

    def _on_segment(self, segment: Segment) -> None:
        data = self._init + segment.path.read_bytes()
        self._init = b""
        self._bytes += len(data)
        self._segments.append(segment.duration_s)
        for start in range(0, len(data), INLINE_CHUNK_BYTES):
            self.emit({"event": "chunk", "index": self._chunks, "segment": segment.index,
                       "duration_s": segment.duration_s if start == 0 else 0.0,
                       "data_b64": base64.b64encode(data[start:start + INLINE_CHUNK_BYTES]).decode("ascii")})
            self._chunks += 1
        self._first()


class BucketLive(LiveOutput):
    """HLS in the bucket: playlist URL first, segments uploaded as they are encoded, ENDLIST at the end."""

    def __init__(self, emit: Emit):
        super().__init__(emit)
        self._store = None
        self._prefix = ""
        self._deadline: Deadline | None = None
        self._uploaded: list[str] = []
        self._entries: list[tuple[float, str]] = []
        self._init_url: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._folder: Path | None = None

    # -- uploads (one thread, in order) ---------------------------------------------------

    def _put(self, path: Path, name: str, content_type: str, cache_control: str) -> None:
        self._store.upload(path, f"{self._prefix}{name}", content_type=content_type, cache_control=cache_control,
                           deadline=self._deadline)
        if f"{self._prefix}{name}" not in self._uploaded:
            self._uploaded.append(f"{self._prefix}{name}")

    def _url(self, name: str) -> str:
        return self._store.link(f"{self._prefix}{name}").url

    def _write_playlist(self, folder: Path, *, ended: bool) -> None:
        lines = ["#EXTM3U", "#EXT-X-VERSION:7", f"#EXT-X-TARGETDURATION:{math.ceil(SEGMENT_S) + 1}",
                 "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-INDEPENDENT-SEGMENTS"]
        if self._init_url:
            lines.append(f'#EXT-X-MAP:URI="{self._init_url}"')
        for duration, url in self._entries:
            lines += [f"#EXTINF:{duration:.6f},", url]
        if ended:
            lines.append("#EXT-X-ENDLIST")
        path = folder / "bucket-index.m3u8"
        path.write_text("\n".join(lines) + "\n")
        self._put(path, "index.m3u8", "application/vnd.apple.mpegurl", "no-cache")

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            if self._failure is not None:
                continue
            try:
                task()
            except BaseException as exc:  # noqa: BLE001 - reported to the render thread at finish
                self._failure = exc

    def _submit(self, task: Callable[[], None]) -> None:
        if self._failure is not None:
            raise self._failure
        self._queue.put(task)

    # -- LiveOutput --------------------------------------------------------------------

    def start(self, *, store, name_stem: str, deadline: Deadline) -> None:
        self._store, self._deadline = store, deadline
        self._prefix = f"{name_stem}-live-{uuid.uuid4().hex[:12]}/"
        with tempfile.TemporaryDirectory(prefix="avatar-live-") as tmp:
            self._write_playlist(Path(tmp), ended=False)  # the URL must work before the first segment
        obj = store.link(f"{self._prefix}index.m3u8")
        event = {"event": "playlist", "format": "hls", "playlist_url": obj.url, "segment_s": SEGMENT_S}
        if obj.expires_at is not None:
            event["expires_at"] = obj.expires_at.isoformat().replace("+00:00", "Z")
        self.emit(event)
        self._worker = threading.Thread(target=self._run, name="live-upload", daemon=True)
        self._worker.start()

    def tee(self, folder: Path, audio: AudioClip, fps: int) -> HlsTee:
        self._folder = folder
        if self._published:
            self._entries, self._init_url = [], None
        return super().tee(folder, audio, fps)

    def _on_init(self, path: Path) -> None:
        def task() -> None:
            self._put(path, f"{self._attempt}/init.mp4", "video/mp4", "private, max-age=86400")
            self._init_url = self._url(f"{self._attempt}/init.mp4")
        self._submit(task)

    def _on_segment(self, segment: Segment) -> None:
        folder = self._folder

        def task() -> None:
            name = f"{self._attempt}/{segment.path.name}"
            self._put(segment.path, name, "video/mp4", "private, max-age=86400")
            url = self._url(name)
            self._entries.append((segment.duration_s, url))
            self._write_playlist(folder, ended=False)
            self._first()
            self.emit({"event": "segment", "index": segment.index, "url": url, "duration_s": segment.duration_s})
        self._submit(task)

    def _drain(self) -> None:
        """Wait (within the job's deadline) until every queued upload is done; re-raise an upload failure."""
        if self._worker is None:
            return
        self._queue.put(None)
        worker = self._worker
        self._worker = None
        self._deadline.call(lambda: worker.join(), stage="upload")
        if self._failure is not None:
            raise self._failure

    def finish(self) -> None:
        super().finish()
        self._drain()
        self._write_playlist(self._folder, ended=True)
        self.emit({"event": "end", "segments": len(self._entries),
                   "duration_s": round(sum(d for d, _ in self._entries), 3)})

    def discard(self) -> None:
        super().discard()
        if self._worker is not None:
            self._failure = self._failure or RuntimeError("discarded")
            self._queue.put(None)
            self._worker.join(timeout=5)
            self._worker = None
        names = [*self._uploaded, f"{self._prefix}index.m3u8"] if self._store is not None else []
        for name in names:
            try:
                self._store.delete(name)
            except Exception:  # noqa: BLE001 - best effort; logged by the store
                log.warning("could not delete live object %s", name)
        self._uploaded.clear()


def make_live(emit: Emit, store) -> LiveOutput:
    return BucketLive(emit) if store is not None else InlineLive(emit)


def replay(live: LiveOutput, mp4: bytes, audio: AudioClip, folder: Path, *, store, name_stem: str,
           deadline: Deadline) -> None:
    """Stream an MP4 that already exists (a cache hit) like a live render: its H.264 packets are copied into
    new segments (no re-encode) with `audio` as the AAC track, so a streaming client gets the same events
    (playlist or chunks, then `end`) whether the render ran now or earlier."""
    live.start(store=store, name_stem=name_stem, deadline=deadline)
    try:
        with av.open(io.BytesIO(mp4)) as source:
            stream = source.streams.video[0]
            tee = live.tee(folder, audio, max(1, round(float(stream.average_rate or 25))))
            for packet in source.demux(stream):
                deadline.check("stream the cached video")
                if packet.dts is not None:
                    tee.video(packet, stream)
        live.finish()
    except BaseException:
        live.discard()
        raise


def stream_cached(emit: Emit, store, key: str, audio: AudioClip, *, work_dir, deadline: Deadline) -> None:
    """A cache hit on a streaming deployment: the cached MP4 (bucket object `key`) streamed through `emit`."""
    mp4 = deadline.call(lambda: store.read(key), stage="deliver (read the cached video)")
    with tempfile.TemporaryDirectory(prefix="avatar-job-", dir=work_dir) as tmp:
        replay(make_live(emit, store), mp4, audio, Path(tmp), store=store, name_stem=key.rsplit(".", 1)[0],
               deadline=deadline)
