""".runpod/hub.json and .runpod/tests.json: the Hub's documented format, checked against Settings.

Like tests/test_docs.py does for the README: every variable the Hub form offers is one the worker reads,
its default is the worker's default, and every deployer-facing setting is offered. Credentials are
offered without a default and ask for a Runpod secret reference, never a value.
"""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from avatar_engine.schema import parse_request
from avatar_engine.settings import Settings
from tests.support.media import REPO

HUB = json.loads((REPO / ".runpod/hub.json").read_text())
TESTS = json.loads((REPO / ".runpod/tests.json").read_text())
ENV = {e["key"]: e for e in HUB["config"]["env"]}
EXTERNAL = {"LOG_LEVEL"}  # read by handler.py, not Settings

# What a deployer has to decide: where results go and how they are returned, where the weights are.
DEPLOYER = {"MEDIA_BUCKET", "MEDIA_PREFIX", "GCS_SIGNED_URL_TTL", "GCS_PUBLIC", "GCS_CREDENTIALS_JSON",
            "BUCKET_ENDPOINT_URL", "BUCKET_NAME", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY",
            "MODEL_ROOT", "VIDEO_ENCODER", "JOB_TIMEOUT_S"}
# A default quality mode, once the worker has one (issue #15 item 1), must be offered too.
DEPLOYER |= {name.upper() for name in Settings.model_fields if name in ("default_quality_mode", "quality_mode")}
CREDENTIALS = {name.upper() for name, f in Settings.model_fields.items() if f.annotation in (SecretStr, SecretStr | None)}
CREDENTIALS |= {"BUCKET_ACCESS_KEY_ID"}


def test_hub_metadata_and_config():
    assert HUB["type"] == "serverless" and HUB["category"] in ("audio", "embedding", "language", "video", "image")
    assert HUB["title"] and HUB["description"]
    cfg = HUB["config"]
    assert cfg["runsOn"] == "GPU" and isinstance(cfg["containerDiskInGb"], int) and cfg["gpuCount"] == 1
    assert cfg["gpuIds"] and all(v.startswith("12.") for v in cfg["allowedCudaVersions"])


def test_every_offered_variable_is_read_by_the_worker():
    fields = {name.upper() for name in Settings.model_fields}
    assert set(ENV) - fields - EXTERNAL == set()
    assert DEPLOYER - set(ENV) == set(), "deployer settings missing from hub.json"


@pytest.mark.parametrize("key", sorted(set(ENV) - EXTERNAL))
def test_inputs_are_well_typed_with_the_workers_defaults(key):
    inp = ENV[key]["input"]
    assert inp["name"] and inp["description"] and inp["type"] in ("string", "number", "boolean")
    field = Settings.model_fields[key.lower()]
    if "default" in inp:
        default = field.default
        if inp["type"] == "boolean":
            assert inp["default"] is default
        elif inp["type"] == "number":
            assert float(inp["default"]) == float(default)
            assert inp.get("min", float("-inf")) <= inp["default"] <= inp.get("max", float("inf"))
        else:
            assert inp["default"] == str(default)
    if "options" in inp:
        assert inp.get("default") in [o["value"] for o in inp["options"]]
    Settings(**{key.lower(): inp.get("default", "x") if inp["type"] != "boolean" else True})  # the worker accepts it


@pytest.mark.parametrize("key", sorted(CREDENTIALS))
def test_credentials_are_secret_references(key):
    inp = ENV[key]["input"]
    assert "default" not in inp and "value" not in ENV[key]
    assert "{{ RUNPOD_SECRET_" in inp["description"]


def test_presets_only_set_offered_variables():
    for preset in HUB["config"].get("presets", []):
        assert preset["name"] and set(preset["defaults"]) <= set(ENV)


def test_tests_json_inputs_parse_and_timeouts_are_ms():
    assert TESTS["tests"] and TESTS["config"]["gpuCount"] == 1 and TESTS["config"]["gpuTypeId"]
    for case in TESTS["tests"]:
        assert case["name"] and isinstance(case["timeout"], int) and 10_000 <= case["timeout"] <= 900_000
        if "action" in case["input"]:
            assert case["input"]["action"] == "health"
        else:
            parse_request(case["input"])
    for e in TESTS["config"].get("env", []):
        assert e["key"] in ENV and isinstance(e["value"], str)


def test_hub_dockerfile_is_the_realtime_image():
    """The Hub builds `.runpod/Dockerfile`: a link to Dockerfile.sadtalker, so the two never drift."""
    link = REPO / ".runpod" / "Dockerfile"
    assert link.is_symlink() and link.resolve() == (REPO / "Dockerfile.sadtalker").resolve()
