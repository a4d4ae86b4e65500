"""Batch manifests and state as real users write them: odd row ids, Excel's BOM, huge cells, text that
looks like JSON, malformed rows and a damaged state.json. No row is lost and no traceback escapes."""

from __future__ import annotations

import base64
import csv
import json

import pytest

from avatar_engine.clients.batch import BatchOptions, RowError, load_manifest, run_batch, string_fields
from tests.clients.fake_hosted import FakeHosted, fast_client

VIDEO = b"\x00\x00\x00\x18ftypisom-not-really-an-mp4"



@pytest.fixture
def hosted():
    fake = FakeHosted()
    yield fake
    fake.close()


def _run(fake, manifest, out):
    return run_batch(manifest, client=fast_client(fake), out_dir=out, options=BatchOptions(progress=False, concurrency=2))


def test_distinct_row_ids_never_share_a_video(hosted, tmp_path):
    ids = ["a/b", "a_b", "a:b", "a b", "A_B", "..", "ünï"]
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("".join(json.dumps({"row_id": r, "image_url": "u", "audio_url": "u"}) + "\n" for r in ids))
    hosted.output = {"video_b64": base64.b64encode(VIDEO).decode(), "frames": 1}
    summary = _run(hosted, manifest, tmp_path / "out")
    assert summary.completed == len(ids)
    rows = json.loads((tmp_path / "out" / "state.json").read_text())["rows"]
    videos = [rows[r]["video"] for r in ids]
    assert len({v.lower() for v in videos}) == len(ids), videos
    assert rows["a_b"]["video"].endswith("/videos/a_b-" + rows["a_b"]["video"].rsplit("-", 1)[1])  # A_B is its twin
    assert all((tmp_path / "out" / "videos").joinpath(v.rsplit("/", 1)[1]).read_bytes() == VIDEO for v in videos)
    assert all("/videos/" in v and not v.rsplit("/", 1)[1].startswith(".") for v in videos)


def test_csv_with_a_bom_text_cells_and_a_huge_cell(tmp_path):
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8"
        w = csv.writer(f)
        w.writerow(["row_id", "image_url", "audio_url", "text", "voice", "size", "sadtalker.preprocess"])
        w.writerow(["a", "https://x/p.png", "", "2024", "true", "256", "full"])
        w.writerow(["b", "https://x/p.png", "", "x" * 140_000, "", "", ""])
        w.writerow(["c", "https://x/p.png", "https://x/a.wav", "", "", "null", ""])
    rows = load_manifest(path)
    assert rows[0] == ("a", {"image_url": "https://x/p.png", "text": "2024", "voice": "true", "size": 256,
                             "sadtalker": {"preprocess": "full"}})
    assert rows[1][0] == "2" and isinstance(rows[1][1], RowError) and "131072" in rows[1][1].message
    assert rows[2] == ("c", {"image_url": "https://x/p.png", "audio_url": "https://x/a.wav", "size": None})
    assert {"text", "transcript", "voice", "language", "captions", "output.name", "preprocess"} <= string_fields()
    assert not {"size", "fps", "still", "seed"} & string_fields()


def test_jsonl_rows_that_are_not_requests(hosted, tmp_path):
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"input": "x"}),
        json.dumps([1, 2]),
        json.dumps({"row_id": "kept", "input": {"image_url": "u", "audio_url": "u"}}),
        '{"row_id": "cut", "image_url": "u"',
        json.dumps({"input": {"row_id": "inner", "image_url": "u", "audio_url": "u"}}),
    ]) + "\n", encoding="utf-8-sig")
    rows = dict(load_manifest(manifest))
    assert rows["kept"] == rows["inner"] == {"image_url": "u", "audio_url": "u"}
    assert all(isinstance(rows[k], RowError) for k in ("1", "2", "4"))
    summary = _run(hosted, manifest, tmp_path / "out")
    assert (summary.completed, summary.failed, summary.pending) == (2, 3, 0) and summary.errors == {"invalid_input": 3}
    assert len(hosted.jobs) == 2  # the bad rows were never submitted
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {r["row"]: r["status"] for r in results} == {"1": "FAILED", "2": "FAILED", "kept": "COMPLETED",
                                                       "4": "FAILED", "inner": "COMPLETED"}


@pytest.mark.parametrize("state", ["[]", '{"rows": [1]}', '{"rows": {"r1": 5}}', '{"rows": {"r1": {"stat',
                                   '{"rows": {"r1": {"status": "FAILED", "attempts": "x"}}}'])
def test_a_damaged_state_names_the_file(hosted, tmp_path, state):
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"row_id": "r1", "image_url": "u", "audio_url": "u"}) + "\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "state.json").write_text(state)
    with pytest.raises(ValueError, match="state.json") as caught:
        _run(hosted, manifest, tmp_path / "out")
    assert str(tmp_path / "out" / "state.json") in str(caught.value)
    assert hosted.jobs == {}
