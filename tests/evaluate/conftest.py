"""One tiny evaluation shared by the evaluator's tests: two short renders at 160 px (text and silence)
and a portrait without a face in between, in process (well under ten seconds on two cores)."""

from __future__ import annotations

import json

import pytest

from avatar_engine.evaluate import EvaluateOptions, evaluate
from tests.support.media import REPO

NO_FACE = REPO / "tests" / "corpus" / "image-no-face.png"

TINY_SUITE = {
    "version": 1,
    "include_default": False,
    "scenarios": [
        {"id": "hello", "title": "Text, en, tiny", "text": "Hello there.", "language": "en",
         "request": {"size": 160}, "tags": ["text"]},
        {"id": "no-face", "portrait": str(NO_FACE), "audio": {"silence_s": 0.5}, "request": {"size": 160}},
        {"id": "quiet", "audio": {"silence_s": 1.0}, "language": "", "request": {"size": 160}, "stream": True},
    ],
}


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "tiny.json"
    path.write_text(json.dumps(TINY_SUITE))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_suite):
    """(out dir, Evaluation) of the tiny suite run in process."""
    out = tmp_path_factory.mktemp("evaluate")
    lines = []
    evaluation = evaluate(EvaluateOptions(out_dir=out, suite=str(tiny_suite), log=lines.append))
    return out, evaluation, lines
