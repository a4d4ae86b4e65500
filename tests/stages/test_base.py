"""The frame-stage contract: every stage names itself and its license, and restoration's one decision rule."""

from __future__ import annotations

import pytest

from avatar_engine.schema import parse_request
from avatar_engine.stages import CAPTIONS, FRAME_STAGES, RESTORE, Need

BASE = {"image_url": "https://example.com/a.png", "audio_url": "https://example.com/a.wav"}


def test_every_stage_states_name_license_and_status(settings):
    assert [stage.name for stage in FRAME_STAGES] == ["gfpgan", "captions"]  # restoration before the text
    for stage in FRAME_STAGES:
        assert stage.license and stage.status(settings).available in (True, False)
    assert not RESTORE.status(settings).available and "GFPGAN" in RESTORE.status(settings).reason


@pytest.mark.parametrize("options, listed, need", [
    ({}, False, Need.OFF),
    ({}, True, Need.WANTED),  # the high-quality chain lists it
    ({"quality_mode": "high_quality"}, False, Need.WANTED),
    ({"enhance": True}, False, Need.REQUIRED),
    ({"enhance": False, "quality_mode": "high_quality"}, True, Need.OFF),  # the request's word wins
])
def test_restoration_need(options, listed, need):
    assert RESTORE.need(parse_request({**BASE, **options}), listed=listed) is need


def test_caption_burn_in_runs_only_when_asked():
    assert CAPTIONS.need(parse_request(BASE), listed=True) is Need.OFF
    burned = parse_request({"image_url": BASE["image_url"], "text": "Hi.", "captions_burn": True})
    assert CAPTIONS.need(burned, listed=False) is Need.REQUIRED
