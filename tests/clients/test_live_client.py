"""`LiveSession` is part of the client wing: it imports no server code, and reads fragment times itself."""

import ast

from avatar_engine.clients.live import fragment_tracks
from tests.support.media import REPO


def test_the_live_client_imports_only_errors_and_schema():
    """Its own imports: the standard library, `websockets` and the error type (the server never)."""
    tree = ast.parse((REPO / "avatar_engine" / "clients" / "live.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    ours = {m for m in found if m.startswith(".") or m.startswith("avatar_engine")}
    assert ours <= {"..errors", "..schema"}, ours
    assert {m.split(".")[0] for m in found - ours} <= {
        "__future__", "base64", "json", "struct", "threading", "dataclasses", "pathlib", "websockets"}


def test_fragment_tracks_reads_moof_times_and_counts():
    from avatar_engine.live.fmp4 import Sample, TrackRun, fragment

    data = fragment(7, [TrackRun(1, 5000, [Sample(b"x" * 10, 1000)]),
                        TrackRun(2, 2048, [Sample(b"a", 1024), Sample(b"b", 1024)])])
    assert fragment_tracks(data) == [(1, 5000, 1), (2, 2048, 2)]
    assert fragment_tracks(b"") == [] and fragment_tracks(b"\x00\x00\x00\x08free") == []
