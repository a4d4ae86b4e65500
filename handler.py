"""Runpod serverless entry point: `python handler.py` (worker), `--test_input`, `--rp_serve_api`.

Engines and their models load once at import (warm workers reuse them); each job is stateless.
`handler` is async, so the SDK can stop a job (avatar_engine/serving/handlers.py); with STREAM_OUTPUT=true it is an
async generator (the `/stream` contract): live video events, then the usual result dict.
"""

import logging

import runpod

from avatar_engine.serving.handlers import run_async, sdk_config, stream_async
from avatar_engine.serving.worker import warm_up
from avatar_engine.settings import get_settings

logging.basicConfig(level=get_settings().log_level or "INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
warm_up()

#: one job in, one result dict out (`error` holds a JSON string with `code` and `message`)
handler = stream_async if get_settings().stream_output else run_async

if __name__ == "__main__":
    runpod.serverless.start(sdk_config(handler))
