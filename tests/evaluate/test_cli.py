"""`python -m avatar_engine evaluate`: the command line stays thin and hands everything to the package."""

from __future__ import annotations

import avatar_engine.evaluate as package
from avatar_engine.cli import main
from avatar_engine.evaluate.runner import Evaluation


def test_arguments_reach_the_evaluator(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake(options):
        seen["options"] = options
        return Evaluation({"summary": {"runs": 0}, "runs": []}, [], 0)

    monkeypatch.setattr(package, "evaluate", fake)
    code = main(["evaluate", "--out", str(tmp_path), "--target", "api:http://127.0.0.1:8000", "--quick",
                 "--engines", "auto,wav2lip", "still", "--timeout", "30", "--suite", "s.yaml"])
    options = seen["options"]
    assert code == 0 and options.engines == ["auto", "wav2lip", "still"] and options.quick
    assert options.target == "api:http://127.0.0.1:8000" and options.timeout_s == 30 and options.suite == "s.yaml"
    assert '"runs": 0' in capsys.readouterr().out


def test_a_bad_target_is_a_usage_error(tmp_path, capsys):
    assert main(["evaluate", "--out", str(tmp_path), "--target", "cloud"]) == 2
    assert "local, api:URL or endpoint:ID" in capsys.readouterr().err
