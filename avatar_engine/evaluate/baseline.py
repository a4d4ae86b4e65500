"""`--baseline`: compare a report with an earlier one, run by run, and name every regression beyond the
tolerances below (docs/EVALUATE.md "Baseline tolerances" states the same numbers).

Runs are matched by id (scenario + requested engine); runs only one report has are not compared."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .checks import CHECK_NAMES

#: slower: more than this share above the baseline's time ...
SLOWER_MARGIN = 0.25
#: ... and more than this many seconds (timer noise on sub-second clips)
SLOWER_SLACK_S = 0.05
#: the sync offset may grow by at most one frame
OFFSET_FRAMES = 1
#: the sync confidence (peak correlation) may drop by at most this much
CONFIDENCE_DROP = 0.1
#: the share of silent frames with a closed mouth may drop by at most this much
MOUTH_CLOSED_DROP = 0.1


@dataclass
class Regression:
    run: str
    metric: str
    baseline: object
    current: object
    allowed: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def _slower(run_id: str, metric: str, base: float | None, cur: float | None) -> list[Regression]:
    if base is None or cur is None:
        return []
    limit = base * (1 + SLOWER_MARGIN) + SLOWER_SLACK_S
    if cur <= limit:
        return []
    return [Regression(run_id, metric, base, cur, f"<= {limit:.3f} s",
                       f"{run_id}: {metric} {cur:.3f} s vs baseline {base:.3f} s ({cur / base if base else 0:.2f}x; "
                       f"allowed +{SLOWER_MARGIN:.0%} + {SLOWER_SLACK_S} s)")]


def _sync(run_id: str, base: dict, cur: dict, fps: float) -> list[Regression]:
    out = []
    b_sync, c_sync = base.get("sync") or {}, cur.get("sync") or {}
    if "offset_ms" in b_sync and "offset_ms" in c_sync:
        frame_ms = 1000.0 / (fps or 25)
        limit = abs(b_sync["offset_ms"]) + OFFSET_FRAMES * frame_ms
        if abs(c_sync["offset_ms"]) > limit + 1e-6:
            out.append(Regression(run_id, "sync.offset_ms", b_sync["offset_ms"], c_sync["offset_ms"],
                                  f"|offset| <= {limit:.0f} ms",
                                  f"{run_id}: A/V offset {c_sync['offset_ms']:.0f} ms vs baseline "
                                  f"{b_sync['offset_ms']:.0f} ms (more than {OFFSET_FRAMES} frame off)"))
    if "confidence" in b_sync and "confidence" in c_sync:
        if c_sync["confidence"] < b_sync["confidence"] - CONFIDENCE_DROP:
            out.append(Regression(run_id, "sync.confidence", b_sync["confidence"], c_sync["confidence"],
                                  f">= {b_sync['confidence'] - CONFIDENCE_DROP:.3f}",
                                  f"{run_id}: sync confidence {c_sync['confidence']:.3f} vs baseline "
                                  f"{b_sync['confidence']:.3f} (dropped more than {CONFIDENCE_DROP})"))
    return out


def _quality(run_id: str, base: dict, cur: dict) -> list[Regression]:
    out = []
    b_closed, c_closed = base.get("mouth_closed_fraction"), cur.get("mouth_closed_fraction")
    if b_closed is not None and c_closed is not None and c_closed < b_closed - MOUTH_CLOSED_DROP:
        out.append(Regression(run_id, "mouth_closed_fraction", b_closed, c_closed,
                              f">= {b_closed - MOUTH_CLOSED_DROP:.3f}",
                              f"{run_id}: mouth closed in {c_closed:.0%} of silent frames vs baseline {b_closed:.0%}"))
    for check in CHECK_NAMES:
        if (base.get("output") or {}).get(check) and not (cur.get("output") or {}).get(check):
            out.append(Regression(run_id, f"output.{check}", True, False, "true",
                                  f"{run_id}: output check {check} failed (passed in the baseline)"))
    return out


def compare_runs(base: dict, cur: dict) -> list[Regression]:
    """Every regression of one run against the same run of the baseline."""
    run_id = cur["id"]
    if base.get("status") == "ok" and cur.get("status") != "ok":
        error = cur.get("error") or {}
        return [Regression(run_id, "status", "ok", cur.get("status"), "ok",
                           f"{run_id}: {cur.get('status')} [{error.get('code')}] {error.get('message', '')[:200]} "
                           f"(rendered in the baseline)")]
    if cur.get("status") != "ok" or base.get("status") != "ok":
        return []
    return (_slower(run_id, "latency_s", base.get("latency_s"), cur.get("latency_s"))
            + _slower(run_id, "first_segment_s", base.get("first_segment_s"), cur.get("first_segment_s"))
            + _sync(run_id, base, cur, cur.get("fps") or base.get("fps") or 25)
            + _quality(run_id, base, cur))


def compare_reports(current: dict, baseline: dict) -> list[Regression]:
    """Regressions of `current` against `baseline`, in the current report's run order."""
    base_runs = {run["id"]: run for run in baseline.get("runs", [])}
    out = []
    for run in current.get("runs", []):
        if run["id"] in base_runs:
            out.extend(compare_runs(base_runs[run["id"]], run))
    return out
