"""Evaluator: the scenario suite run against any deployment -> report.json, report.html, baseline check.

    python -m avatar_engine evaluate --out DIR [--target local|api:URL|endpoint:ID] [--suite FILE] [--quick]

One module per job: `suite` (scenarios), `inputs` (request bytes, generated audio), `targets` (where
they run), `checks` (MP4 output checks), `metrics` (sync, silence, blinks, head motion), `report`
(report.json), `plots` + `html` (report.html), `baseline` (regressions), `runner` (the whole run).
"""

from .runner import EvaluateOptions, Evaluation, evaluate

__all__ = ["EvaluateOptions", "Evaluation", "evaluate"]
