"""The shipped suite and suite files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avatar_engine.errors import AvatarError
from avatar_engine.evaluate.inputs import RATE, generated_audio, prepare_input
from avatar_engine.evaluate.suite import ASSETS, default_suite, load_suite, quick_suite, select_suite


def test_default_suite_covers_languages_lengths_and_special_cases():
    suite = default_suite()
    text = [s for s in suite if s.text is not None]
    languages = {s.language for s in text}
    assert {"en", "de", "es", "fr", "ru", "cmn"} <= languages
    for language in languages:
        assert {"short", "medium"} <= {t for s in text if s.language == language for t in s.tags}
    ids = {s.id for s in suite}
    assert {"speech-short", "silence", "speech-noise", "speech-long", "stream"} <= ids
    assert any(s.stream for s in suite)
    assert len(ids) == len(suite)


def test_quick_subset_is_small_but_varied():
    quick = quick_suite()
    assert len(quick) >= 5
    assert len({s.language for s in quick if s.language}) >= 3
    assert any(s.stream for s in quick) and any(s.id == "silence" for s in quick)
    assert not any("long" in s.tags for s in quick)


def test_generated_audio_silence_loop_and_noise():
    assert not generated_audio({"silence_s": 1.5}).any() and len(generated_audio({"silence_s": 1.5})) == 1.5 * RATE
    speech = str(ASSETS / "short_16k.wav")
    looped = generated_audio({"file": speech, "loop_to_s": 5.0})
    assert len(looped) == 5 * RATE
    clean = generated_audio({"file": speech})
    noisy = generated_audio({"file": speech, "noise_snr_db": 10.0, "noise_seed": 1})
    noise = noisy - clean
    active = np.abs(clean) > 0.01 * np.abs(clean).max()
    snr = 20 * np.log10(np.sqrt(np.mean(clean[active] ** 2)) / np.sqrt(np.mean(noise ** 2)))
    assert abs(snr - 10.0) < 0.5
    assert np.array_equal(noisy, generated_audio({"file": speech, "noise_snr_db": 10.0, "noise_seed": 1}))


def test_every_default_scenario_prepares_base64_requests():
    for scenario in default_suite():
        prepared = prepare_input(scenario, "auto")
        assert "image_b64" in prepared.payload and prepared.payload["engine"] == "auto"
        assert ("text" in prepared.payload) != ("audio_b64" in prepared.payload)
    long = next(s for s in default_suite() if s.id == "speech-long")
    assert prepare_input(long, "auto").audio_s == pytest.approx(60.0)


def test_suite_file_json_and_yaml_with_relative_paths(tmp_path):
    (tmp_path / "me.png").write_bytes((ASSETS / "astronaut_512.png").read_bytes())
    entry = {"id": "mine", "portrait": "me.png", "audio": {"file": "talk.wav", "noise_snr_db": 5},
             "request": {"size": 256, "lipsync": "signal"}}
    (tmp_path / "suite.json").write_text(json.dumps({"version": 1, "scenarios": [entry]}))
    scenarios = load_suite(tmp_path / "suite.json")
    assert [s.id for s in scenarios][-1] == "mine" and len(scenarios) == len(default_suite()) + 1
    mine = scenarios[-1]
    assert mine.portrait == str(tmp_path / "me.png") and mine.audio["file"] == str(tmp_path / "talk.wav")
    (tmp_path / "suite.yaml").write_text("version: 1\ninclude_default: false\nscenarios:\n"
                                         "  - {id: hi, text: Hallo, language: de}\n")
    assert [s.id for s in select_suite(tmp_path / "suite.yaml", quick=True)] == ["hi"]
    (tmp_path / "quick.json").write_text(json.dumps({"scenarios": [entry]}))
    assert len(load_suite(tmp_path / "quick.json", quick=True)) == len(quick_suite()) + 1


@pytest.mark.parametrize("body, words", [
    ({"scenarios": [{"id": "x"}]}, "exactly one of"),
    ({"scenarios": [{"id": "x", "text": "hi", "colour": "red"}]}, "unknown keys"),
    ({"scenarios": [{"text": "hi"}]}, "no `id`"),
    ({"version": 2, "scenarios": []}, "version 2"),
    ({"include_default": False, "scenarios": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, "duplicate"),
])
def test_bad_suite_files_say_what_is_wrong(tmp_path, body, words):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(body))
    with pytest.raises(AvatarError, match=words) as err:
        load_suite(path)
    assert err.value.code == "invalid_input"


def test_missing_suite_file_is_invalid_input(tmp_path):
    with pytest.raises(AvatarError, match="suite file"):
        load_suite(tmp_path / "nope.json")
