"""The Live camera page in a real browser: `ferkit app` on 127.0.0.1, headless chromium whose fake camera
plays a clip made from a real photo, WebRTC between them with no ICE server (nothing outside this
computer), and the frames the server processes per second.
"""

from __future__ import annotations

import sys

import pytest
from conftest import NO_TORCH, REPO
from streamlit.testing.v1 import AppTest

from ferkit.app import MODEL_ENV, harness
from ferkit.draw import colour

PHOTO = REPO / "ferkit" / "app" / "samples" / "single_happy_astronaut.jpg"
APP = REPO / "ferkit" / "app" / "main.py"
LIVE_S = 8         # seconds of live picture before the frame rate is read
MIN_FPS = 2.0      # frames processed per second, at the least, on 2 busy cores with the default (VGG) model
MIN_TAG_PX = 500   # pixels of the "happy" tag colour in the picture sent back: boxes and tags are drawn


def test_without_streamlit_webrtc_the_page_says_so_in_one_line(monkeypatch):
    """(AppTest cannot run the WebRTC component itself: it needs a real server's session manager.)"""
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "streamlit_webrtc", None)  # as if it were not installed
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("views/camera.py").run()
    assert not at.exception, at.exception
    [error] = [e.value for e in at.main.error]
    assert error.startswith("the live camera needs streamlit-webrtc") and "\n" not in error
    assert any("Take a photo" in m.value for m in at.markdown)  # the snapshot, the way that still works


@pytest.mark.browser
def test_live_camera_labels_the_faces_it_sees(tmp_path):
    if not harness.has_chromium():
        pytest.skip(f"{harness.CHROMIUM} or {harness.CHROMEDRIVER} is missing (run scripts/install_browser.sh)")
    clip = harness.fake_camera_clip(PHOTO, tmp_path / "clip.y4m")
    with harness.serve(tmp_path, pythonpath=[NO_TORCH]) as served:
        browser = harness.chromium(tmp_path / "profile", *harness.fake_camera_flags(clip))
        try:
            run = harness.measured_live_run(browser, served.url, LIVE_S)
            tag_px = harness.live_picture_pixels(browser, colour("happy")[::-1])
            harness.screenshot(browser, tmp_path / "app_camera.png", REPO / "docs" / "img")
        finally:
            browser.quit()
        log = served.log.read_text()
    print(f"live camera: {run.fps:.1f} frames/s processed over {run.seconds} s; the page says: {run.status}")
    assert "· #1 😄 happy" in run.status, run.status  # one face, one track all along
    assert run.fps >= MIN_FPS and run.fps_last_window >= MIN_FPS and run.ms_per_frame > 0, run.status
    assert tag_px >= MIN_TAG_PX, f"only {tag_px} px of the happy tag's colour in the picture sent back"
    assert "Traceback" not in log, log
