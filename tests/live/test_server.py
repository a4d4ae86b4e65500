"""The HTTP side: /ping for load balancers, the page, the command line, the session cap."""

from starlette.testclient import TestClient

from avatar_engine.cli import main
from avatar_engine.live.server import create_app, session_cap
from avatar_engine.settings import Settings


def test_ping_is_204_while_loading_then_200():
    app = create_app(Settings(), warm=False)
    live = app.state.live
    with TestClient(app) as client:
        live.ready.clear()
        assert client.get("/ping").status_code == 204
        live.ready.set()
        assert client.get("/ping").status_code == 200


def test_the_page_is_served():
    with TestClient(create_app(Settings(), warm=False)) as client:
        page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for part in ('id="video"', "MediaSource", "/live", "getUserMedia", 'type="file"', "interrupt"):
        assert part in page.text


def test_session_cap_defaults_by_cores_and_can_be_set(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1})
    assert session_cap(Settings()) == 4
    assert session_cap(Settings(live_max_sessions=7)) == 7


def test_the_command_line_serves_on_the_given_port(monkeypatch):
    seen = {}
    monkeypatch.setattr("avatar_engine.live.server.main", lambda host, port: seen.update(host=host, port=port))
    assert main(["live", "--host", "127.0.0.1", "--port", "9123"]) == 0
    assert seen == {"host": "127.0.0.1", "port": 9123}


def test_a_named_avatar_at_48_khz_speaks_text(tmp_path):
    import io
    import shutil

    import av

    from avatar_engine.clients.live import Fragment, LiveSession
    from tests.support.live import REPO, running_server

    shutil.copy(REPO / "assets" / "astronaut_512.png", tmp_path / "astronaut.png")
    with running_server(Settings(avatars_dir=tmp_path)) as (url, live):
        live.ready.wait(60)
        with LiveSession.connect(url.replace("http", "ws") + "/live", avatar_id="astronaut", size=128,
                                 sample_rate=48000) as session:
            session.say("Hi.")
            session.end()
            events = list(session)
    assert session.close_code == 1000
    assert any(isinstance(e, dict) and e["type"] == "scheduled" for e in events)
    video = b"".join(e.data for e in events if isinstance(e, Fragment))
    with av.open(io.BytesIO(video)) as c:
        assert c.streams.audio[0].rate == 48000
        peak = max(float(abs(f.to_ndarray()).max()) for f in c.decode(audio=0))
    assert peak > 0.05  # the voice is in the stream
