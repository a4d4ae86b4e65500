"""Runpod serverless entry point: `python handler.py` (worker), `--test_input`, `--rp_serve_api`.

Engines and their models load once at import (warm workers reuse them); each job is stateless.
"""

import logging
import os

import runpod

from avatar_engine.worker import run_job, warm_up

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
warm_up()


def handler(job):
    """One job in, one result dict out (`error` holds a JSON string with `code` and `message`)."""
    return run_job(job)


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
