"""The page in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Loads `/`, starts a session with the bundled portrait, sends the bundled speech file, and checks that
the <video> plays (its time advances, no media error) and that the mouth moves. Skipped only when no
Chromium binary exists (`.ci/run` installs it: apt-get install chromium).
"""

import os
import shutil
import time

import numpy as np
import pytest

from tests.support.live import REPO, running_server

pytestmark = pytest.mark.slow

_SAMPLE_JS = """() => {
  const v = document.getElementById('video'), live = window.live;
  const out = {t: v.currentTime, error: v.error ? v.error.code : null, errors: live.errors, mouth: null,
               fragments: live.fragments};
  if (live.ready && v.videoWidth) {
    const c = document.createElement('canvas');
    c.width = v.videoWidth; c.height = v.videoHeight;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    const [x0, y0, x1, y1] = live.ready.mouth_box;
    const d = g.getImageData(x0, y0, x1 - x0, y1 - y0).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += (d[i] + d[i + 1] + d[i + 2]) / 3;
    out.mouth = sum / (d.length / 4);
  }
  return out;
}"""


def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


def test_the_page_plays_the_live_stream_and_the_mouth_moves():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' brings playwright")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    with running_server() as (url, live), sync_api.sync_playwright() as pw:
        live.ready.wait(60)
        browser = pw.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.set_input_files("#portrait", str(REPO / "assets" / "astronaut_512.png"))
            page.click("#start")
            page.wait_for_function("window.live.ready !== null || window.live.errors.length > 0", timeout=30000)
            assert page.evaluate("window.live.errors") == []
            page.wait_for_function("document.getElementById('video').currentTime > 0.3", timeout=15000)
            idle = []
            for _ in range(15):  # 1.5 s of idling: blinks and head motion only
                idle.append(page.evaluate(_SAMPLE_JS))
                time.sleep(0.1)
            page.set_input_files("#audio", str(REPO / "assets" / "speech_16k.wav"))
            samples = []
            for _ in range(60):  # 6 s: the 5.9 s speech file plays at real time
                samples.append(page.evaluate(_SAMPLE_JS))
                time.sleep(0.1)
        finally:
            browser.close()
    assert all(s["error"] is None and not s["errors"] for s in samples), samples[-1]
    times = [s["t"] for s in samples]
    assert times[-1] - times[0] > 4.0 and all(b >= a for a, b in zip(times, times[1:]))  # it plays, live
    mouth = np.array([s["mouth"] for s in samples if s["mouth"] is not None])
    still = np.array([s["mouth"] for s in idle if s["mouth"] is not None])
    print(f"browser: video time {times[0]:.2f} -> {times[-1]:.2f} s; mouth box mean luma while speaking "
          f"{mouth.min():.1f}-{mouth.max():.1f}, idle {still.min():.1f}-{still.max():.1f}")
    # an open mouth darkens its box (the painted inside) far more than idle head motion and blinks do
    assert len(mouth) > 40 and np.ptp(mouth) > 2 * np.ptp(still) + 4, (mouth, still)
