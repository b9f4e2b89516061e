"""An annotated video plays in a browser: served on 127.0.0.1 to Debian's headless chromium, a <video> element.

OpenCV's mp4v (MPEG-4 part 2), what ferkit once wrote, fails here with MEDIA_ERR_SRC_NOT_SUPPORTED;
the H.264 (.mp4) and VP9 (.webm) that ferkit writes through imageio-ffmpeg's ffmpeg must decode.
"""

from __future__ import annotations

import functools
import http.server
import threading

import cv2
import pytest

from test_browser import browser  # noqa: F401 (the app test's headless chromium; skips here without it)
from test_video import CLIP_FPS, CLIP_FRAMES, make_clip

from ferkit.infer import load
from ferkit.video import analyse_video

pytestmark = pytest.mark.browser

LOAD_WAIT_S = 20
# Resolves with what the element knows once it has decoded a frame (loadeddata) or given up (error).
PROBE_JS = """
const done = arguments[arguments.length - 1];
const video = document.createElement("video");
video.muted = true;
const report = () => done({ready: video.readyState, duration: video.duration, width: video.videoWidth,
                           height: video.videoHeight, error: video.error && video.error.code});
video.addEventListener("loadeddata", report);
video.addEventListener("error", report);
video.src = arguments[0];
document.body.appendChild(video);
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(folder, base url): a static server on 127.0.0.1 for the folder, stopped afterwards."""
    folder = tmp_path_factory.mktemp("served")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


def probe(browser, base: str, name: str) -> dict:
    browser.get(f"{base}/")
    browser.set_script_timeout(LOAD_WAIT_S)
    return browser.execute_async_script(PROBE_JS, f"/{name}")


def test_the_old_mp4v_does_not_play(browser, served, photos_dir):
    """The control: proves the probe tells a playable file from one a browser cannot decode."""
    folder, base = served
    make_clip(photos_dir / "single_happy_astronaut.jpg", folder / "mp4v.mp4", frames=6)
    state = probe(browser, base, "mp4v.mp4")
    assert state["error"] is not None and state["ready"] < 2


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_an_annotated_video_plays_in_chromium(browser, served, photos_dir, suffix):
    folder, base = served
    clip = make_clip(photos_dir / "single_happy_astronaut.jpg", folder / f"clip{suffix}.source.mp4")
    out = folder / f"annotated{suffix}"
    analyse_video(load(), clip, annotate_path=out, max_frames=CLIP_FRAMES)
    width = int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_WIDTH))
    state = probe(browser, base, out.name)
    assert state["error"] is None and state["ready"] >= 2, state
    assert state["duration"] == pytest.approx(CLIP_FRAMES / CLIP_FPS, abs=0.15)
    assert state["width"] == width

