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
