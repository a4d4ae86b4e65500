"""`{"action": "health"}`: what this worker can do right now, without rendering anything.

Answers in milliseconds on a warm worker: the device and its free memory, whether NVENC opens (probed
once per process by `media.encode.pick_encoder`), and per engine and stage its license, whether it can
run, whether `auto` would pick it, and each checkpoint file's state (found / missing / size / checksum,
from `inventory`, never by hashing), and whether a browser can play the bucket's URLs (its CORS policy,
read at most once per 10 minutes). Engines listed in the inventory that this build does not contain yet
appear with `registered: false`, so a deployer sees what mounting their weights would need.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..runtime.device import device_report
from ..settings import Settings

log = logging.getLogger(__name__)


def encoder_report(settings: Settings) -> dict[str, Any]:
    from ..media.encode import pick_encoder

    selected = pick_encoder(settings.video_encoder)
    nvenc = selected == "h264_nvenc" or (settings.video_encoder == "libx264" and pick_encoder("auto") == "h264_nvenc")
    return {"nvenc": nvenc, "selected": selected, "preference": settings.video_encoder}


def engine_reports(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every registered engine plus every inventory engine not built in yet, by name."""
    from ..engines import ENGINES
    from ..runtime.inventory import component_report, load_inventory

    out: dict[str, dict[str, Any]] = {}
    for name, engine in ENGINES.items():
        status = engine.status(settings)
        try:
            suits = bool(engine.suits_auto(settings))
        except Exception as exc:  # noqa: BLE001
            log.warning("suits_auto of %s failed: %s", name, exc)
            suits = False
        report = component_report("engines", name, settings)
        out[name] = {"registered": True, "available": status.available, "reason": status.reason,
                     "auto": status.available and suits, "license": report["license"],
                     "found": status.checkpoints, "forms": status.forms, "checkpoints": report["checkpoints"]}
    for name in load_inventory()["engines"]:
        if name not in out:
            report = component_report("engines", name, settings)
            out[name] = {"registered": False, "available": False,
                         "reason": f"engine '{name}' is not built into this worker",
                         "auto": False, "license": report["license"], "found": {},
                         "checkpoints": report["checkpoints"]}
    return out


def stage_reports(settings: Settings) -> dict[str, dict[str, Any]]:
    from ..runtime.inventory import component_report, load_inventory

    out = {}
    for name in load_inventory()["stages"]:
        report = component_report("stages", name, settings)
        out[name] = {"available": not report["missing"], "license": report["license"],
                     "checkpoints": report["checkpoints"]}
    return out


def auto_chain(settings: Settings) -> list[str] | None:
    """The stages `auto` would run here, e.g. ["parametric", "wav2lip"] (None if resolving fails)."""
    from ..engines import AUTO_ORDER, ENGINES
    from ..engines.selection import auto_picks

    try:
        return auto_picks(ENGINES, AUTO_ORDER, settings)
    except Exception as exc:  # noqa: BLE001
        log.warning("resolving auto failed: %s", exc)
        return None


#: how long a bucket CORS answer is reused (health stays cheap: one metadata read per worker per period)
PLAYBACK_TTL_S = 600.0
_playback_lock = threading.Lock()
_playback_cache: dict[int, tuple[float, dict[str, Any]]] = {}


def _playback_check(settings: Settings) -> dict[str, Any]:
    from ..media.delivery import get_store

    try:
        store = get_store(settings)
    except Exception as exc:  # noqa: BLE001 - a broken bucket configuration is reported, not raised
        return {"bucket": True, "ok": False, "reason": f"the bucket client could not be built ({type(exc).__name__})"}
    if store is None:
        return {"bucket": False, "ok": True, "reason": "no bucket: videos and streams are returned inline"}
    if not hasattr(store, "cors_rules"):
        return {"bucket": True, "ok": None, "reason": "this store cannot report its CORS policy"}
    try:
        rules = store.cors_rules()
    except Exception as exc:  # noqa: BLE001 - no permission, no network: say so, never fail health
        return {"bucket": True, "ok": None, "reason": f"the bucket's CORS policy could not be read "
                f"({type(exc).__name__}); browser playback (hls.js, <video crossorigin>) fails without one: "
                "see docs/DEPLOY.md, 'Browser playback (CORS)'"}
    origins = sorted({o for rule in rules if "GET" in rule["methods"] for o in rule["origins"]})
    if not origins:
        return {"bucket": True, "ok": False, "origins": [], "reason": "no bucket CORS rule allows GET: browsers "
                "will block the playlist and segments ('blocked by CORS'); see docs/DEPLOY.md, 'Browser playback "
                "(CORS)'"}
    return {"bucket": True, "ok": True, "origins": origins}


def browser_playback(settings: Settings) -> dict[str, Any]:
    """Whether a browser can play this worker's bucket URLs (HLS via hls.js needs the bucket's CORS to allow
    GET from the page's origin); checked once per `PLAYBACK_TTL_S`, `checked_at` says when."""
    now = time.time()
    with _playback_lock:
        cached = _playback_cache.get(id(settings))
        if cached is not None and now - cached[0] < PLAYBACK_TTL_S:
            return cached[1]
    report = {**_playback_check(settings), "checked_at": round(now, 1)}
    with _playback_lock:
        _playback_cache[id(settings)] = (now, report)
    return report


def models_summary(settings: Settings) -> dict[str, Any]:
    """The model doctor's cheap summary (format from each file's first bytes, cached per file identity)."""
    from ..runtime.doctor import summary

    try:
        return summary(settings)
    except Exception as exc:  # noqa: BLE001 - health reports, never raises
        log.warning("model summary failed: %s", exc)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def health(settings: Settings) -> dict[str, Any]:
    from ..runtime.inventory import license_policy

    t0 = time.perf_counter()
    out = {
        "ok": True,
        "device": device_report(),
        "encoder": encoder_report(settings),
        "model_root": str(settings.model_root),
        "engines": engine_reports(settings),
        "stages": stage_reports(settings),
        "auto_chain": auto_chain(settings),
        "browser_playback": browser_playback(settings),
        "models": models_summary(settings),
        "licenses": license_policy(settings),
    }
    out["elapsed_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return out
