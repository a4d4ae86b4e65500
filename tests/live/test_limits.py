"""Real use: token, session cap, bad messages, size and time limits, vanished and slow clients."""

import asyncio
import base64
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from avatar_engine.clients.live import LiveSession
from avatar_engine.errors import AvatarError
from avatar_engine.settings import Settings
from tests.support.live import REPO, running_server

PORTRAIT = REPO / "assets" / "astronaut_512.png"
START = {"type": "start", "image_b64": base64.b64encode(PORTRAIT.read_bytes()).decode(), "size": 128}


def _ws(url: str, path: str = "/live", **kw):
    return connect(url.replace("http", "ws") + path, max_size=None, **kw)


def _refused(url: str, first, **kw) -> tuple[dict, int]:
    """Send `first` (dict -> JSON, bytes as is); the error message and the close code."""
    with _ws(url, **kw) as ws:
        try:
            ws.send(json.dumps(first) if isinstance(first, dict) else first)
        except ConnectionClosed:
            pass  # refused before the first message
        message = json.loads(ws.recv(timeout=20))
        while True:
            try:
                ws.recv(timeout=20)
            except Exception:
                return message, ws.close_code


def _wait_idle(live, timeout: float = 5.0) -> None:
    """Sessions of earlier tests free their slot just after their close reaches the client."""
    deadline = time.monotonic() + timeout
    while live.active and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture(scope="module")
def server():
    settings = Settings(live_token="s3cret", live_max_sessions=1, live_max_message_bytes=4096,
                        live_max_session_s=1.5)
    with running_server(settings) as (url, live):
        live.ready.wait(60)
        yield url, live


def test_token_is_required(server):
    url, _ = server
    message, code = _refused(url, START)
    assert (message["type"], message["code"], code) == ("error", "unauthorized", 4401)
    message, code = _refused(url, START, additional_headers={"Authorization": "Bearer wrong"})
    assert (message["code"], code) == ("unauthorized", 4401)


@pytest.mark.parametrize("first, code", [
    (b"\x00\x01", "invalid_input"), ("not json", "invalid_input"), ({"type": "text", "text": "hi"}, "invalid_input"),
    ({"type": "start"}, "invalid_input"), ({**START, "sample_rate": 8000}, "invalid_input"),
    ({**START, "engine": "wav2lip"}, "invalid_input"), ({**START, "image_b64": "aGVsbG8="}, "unsupported_media"),
])
def test_bad_start_messages_are_json_errors_with_close_codes(server, first, code):
    url, _ = server
    message, close = _refused(url, first, additional_headers={"Authorization": "Bearer s3cret"})
    assert message["code"] == code and message["message"]
    assert close == {"invalid_input": 4400, "unsupported_media": 4415}[code]


def test_cap_oversize_messages_and_time_limit(server):
    url, live = server
    _wait_idle(live)
    session = LiveSession.connect(url.replace("http", "ws") + "/live?token=s3cret", image_path=PORTRAIT, size=128)
    with pytest.raises(AvatarError) as busy:  # the cap is one session
        LiveSession.connect(url.replace("http", "ws") + "/live", image_path=PORTRAIT, token="s3cret", size=128)
    assert busy.value.code == "busy"
    session.send_pcm(b"\x00" * 8192)  # over LIVE_MAX_MESSAGE_BYTES
    events = list(session)
    assert events[-1]["code"] == "input_too_large" and session.close_code == 1009
    session = LiveSession.connect(url.replace("http", "ws") + "/live", image_path=PORTRAIT, token="s3cret", size=128)
    t0 = time.monotonic()
    events = list(session)
    assert events[-1]["code"] == "timeout" and session.close_code == 4408
    assert 1.4 < time.monotonic() - t0 < 6.0
    _wait_idle(live)
    assert live.active == 0


def test_unknown_message_closes_but_a_bad_text_does_not(server):
    url, live = server
    _wait_idle(live)
    session = LiveSession.connect(url.replace("http", "ws") + "/live", image_path=PORTRAIT, token="s3cret", size=128)
    session.say("   ")
    session._send(json.dumps({"type": "dance"}))
    events = [e for e in session if isinstance(e, dict)]
    assert [(e["code"], e.get("fatal")) for e in events if e["type"] == "error"] == [
        ("invalid_input", False), ("invalid_input", None)]
    assert session.close_code == 4400


def test_a_vanished_client_frees_its_session_at_once(server):
    url, live = server
    _wait_idle(live)
    session = LiveSession.connect(url.replace("http", "ws") + "/live", image_path=PORTRAIT, token="s3cret", size=128)
    session.recv(timeout=5)
    assert live.active == 1
    session._ws.socket.close()  # no close frame: the TCP connection just ends
    deadline = time.monotonic() + 3
    while live.active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live.active == 0


class _StuckSocket:
    """A client that never reads: every binary send blocks."""

    def __init__(self):
        self.json, self.closed = [], None

    async def send_json(self, message):
        self.json.append(message)

    async def send_bytes(self, data):
        await asyncio.sleep(3600)

    async def receive(self):
        await asyncio.sleep(3600)

    async def close(self, code=1000, reason=""):
        self.closed = code


def test_a_slow_reader_gets_frames_held_then_closed_with_bounded_memory():
    from avatar_engine.live.protocol import parse_start
    from avatar_engine.live.session import LiveSession as ServerSession
    from avatar_engine.live.session import open_stream

    settings = Settings(live_send_buffer_s=0.2, live_slow_close_s=0.5)
    start = parse_start(START)
    stream, first = open_stream(start, settings)
    ws = _StuckSocket()
    session = ServerSession(ws, start, stream, settings)

    async def go():
        ws_send = ws.send_bytes
        calls = []

        async def first_sends(data):  # ready + init go out, then the client stops reading
            calls.append(len(data))
            if len(calls) > 1:
                await ws_send(data)
        ws.send_bytes = first_sends
        await asyncio.wait_for(session.run(first), 5)

    asyncio.run(go())
    assert ws.json[-1]["code"] == "slow_client" and ws.closed == 4429
    assert stream.frames_held > 5
    assert session._outbox.qsize() <= (0.2 + 0.5) * 25 + 5  # bounded: at most buffer + grace of fragments


def test_a_bug_in_a_session_is_an_internal_error_not_a_crash(server, monkeypatch):
    url, live = server
    _wait_idle(live)

    def broken(self, **_kw):
        raise ValueError("boom")

    session = LiveSession.connect(url.replace("http", "ws") + "/live", image_path=PORTRAIT, token="s3cret", size=128)
    monkeypatch.setattr("avatar_engine.live.stream.LiveStream.next_fragment", broken)
    events = [e for e in session if isinstance(e, dict)]
    assert events[-1]["code"] == "internal" and session.close_code == 1011
    assert "boom" not in events[-1]["message"]
    monkeypatch.undo()
    _wait_idle(live)
    with LiveSession.connect(url.replace("http", "ws") + "/live", image_path=PORTRAIT, token="s3cret",
                             size=128) as again:  # the server still serves
        assert again.recv(timeout=5) is not None
