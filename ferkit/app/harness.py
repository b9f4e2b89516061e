"""The app as the tests and benchmarks drive it: `ferkit app` in the background on a free port, and
Debian's headless chromium through selenium; ``free_port`` and ``start_service`` (`ferkit serve`)
serve the service's tests and benchmark too.

The app itself never imports this module; selenium (the test extra) is imported only when a browser
is asked for, psutil only when the server's memory is.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import MODEL_ENV

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SERVER_START_S = 60
STOP_S = 10
WINDOW = (1400, 1000)
DOCS_SCREENSHOT_ENV = "FERKIT_DOCS_SCREENSHOT"  # set: the browser tests refresh docs/img/app_*.png
BROWSER_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run")


def has_chromium() -> bool:
    return CHROMIUM.is_file() and CHROMEDRIVER.is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    """A running `ferkit app`: its address, its process and where its output goes."""

    url: str
    process: subprocess.Popen
    log: Path

    def rss(self) -> int:
        """Resident memory (bytes) of the Streamlit server: the launcher's child processes, or itself."""
        import psutil

        launcher = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in launcher.children(recursive=True) or [launcher])


def wait_until_serving(served: Served, health: str = "/_stcore/health", timeout: float = SERVER_START_S) -> None:
    """Return once the server answers ``health``; AssertionError with its log when it does not."""
    command = f"`ferkit {served.process.args[3]}`"  # [python, -m, ferkit, app|serve, ...]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"{command} exited with {served.process.returncode} before serving:\n"
                                 f"{served.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{served.url}{health}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{command} did not answer at {served.url} within {timeout:.0f} s:\n{served.log.read_text()}")


def start_service(log: Path, *options: str, cwd: Path | None = None) -> Served:
    """`ferkit serve` on 127.0.0.1 and a free port, its output in ``log``, once /healthz answers; the caller stops
    it (``stop(served.process)``)."""
    port = free_port()
    command = [sys.executable, "-m", "ferkit", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", *options]
    with open(log, "wb") as out:
        served = Served(f"http://127.0.0.1:{port}",
                        subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT), log)
    try:
        wait_until_serving(served, "/healthz")
    except BaseException:
        stop(served.process)
        raise
    return served


@contextlib.contextmanager
def serve(folder: Path, *, model: str | None = None, pythonpath: Sequence[Path] = (),
          extra_args: Sequence[str] = ()) -> Iterator[Served]:
    """`ferkit app --headless` on 127.0.0.1 and a free port, run from ``folder``; always stopped afterwards.

    ``model``: what ``--model`` takes (None: the bundled default, $FERKIT_MODEL ignored);
    ``pythonpath``: folders put first on the server's PYTHONPATH (tests/no_torch hides torch).
    """
    package_parent = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != MODEL_ENV}
    env["PYTHONPATH"] = os.pathsep.join(map(str, [*pythonpath, package_parent]))
    port = free_port()
    command = [sys.executable, "-m", "ferkit", "app", "--port", str(port), "--address", "127.0.0.1", "--headless",
               *(["--model", model] if model else []), *extra_args]
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        served = Served(f"http://127.0.0.1:{port}", process, log_path)
        try:
            wait_until_serving(served)
            yield served
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def chromium(profile: Path, *flags: str, window: tuple[int, int] = WINDOW):
    """A headless chromium (selenium WebDriver) with its own profile folder; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*BROWSER_FLAGS, f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}", *flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    return driver


def screenshot(driver, path: Path, docs_dir: Path | None = None) -> Path:
    """Save what the browser shows to ``path``, and a copy into ``docs_dir`` when $FERKIT_DOCS_SCREENSHOT is set."""
    from ..fileio import write_bytes

    assert driver.save_screenshot(str(path)), f"chromium could not save {path}"
    if docs_dir is not None and os.environ.get(DOCS_SCREENSHOT_ENV):
        write_bytes(docs_dir / path.name, path.read_bytes())
    return path


def fake_camera_flags(y4m: Path) -> tuple[str, ...]:
    """Chromium flags that grant the camera without asking and play ``y4m`` (looped) as its picture."""
    return ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}")


# --- the live camera page, with chromium's fake camera --------------------------------------------

LIVE_STATUS = re.compile(r"Processing ([\d.]+) frames/s \((\d+) so far(?:, (\d+) ms each)?\)")
CLIP_SIZE = (640, 480)
CLIP_FPS = 30
LIVE_WAIT_S = 60


def fake_camera_clip(photo: Path, path: Path, frames: int = CLIP_FPS) -> Path:
    """A Y4M clip (what chromium's fake camera plays, looped) of ``photo`` drifting right and back, 640x480 at
    30 fps: it loops without a jump, so a face keeps its track."""
    import cv2
    import numpy as np

    from ..fileio import atomic_open

    image = cv2.resize(cv2.imread(str(photo)), CLIP_SIZE, interpolation=cv2.INTER_AREA)
    with atomic_open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{CLIP_SIZE[0]} H{CLIP_SIZE[1]} F{CLIP_FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            shifted = np.roll(image, 2 * min(i, frames - i), axis=1)
            f.write(b"FRAME\n" + cv2.cvtColor(shifted, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def start_live_camera(driver, url: str) -> None:
    """Open the Live camera page and press its Start button (inside streamlit-webrtc's iframe)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/camera")
    wait = WebDriverWait(driver, LIVE_WAIT_S)
    frame = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "iframe[src*=webrtc]")))
    driver.switch_to.frame(frame)
    try:
        start = "//button[translate(normalize-space(), 'start', 'START')='START']"  # CSS shows "Start" in capitals
        wait.until(EC.element_to_be_clickable((By.XPATH, start))).click()
    finally:
        driver.switch_to.default_content()


def live_status(driver, min_frames: int) -> tuple[str, float, int, int | None]:
    """The Live camera page's status line once ``min_frames`` were processed: (text, frames/s, frames,
    ms of processing per frame)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def status(d):
        for element in d.find_elements(By.XPATH, "//*[contains(text(), 'frames/s')]/ancestor::p[1]"):
            match = LIVE_STATUS.search(element.text)
            if match and int(match[2]) >= min_frames:
                return element.text, float(match[1]), int(match[2]), match[3] and int(match[3])
        return False

    return WebDriverWait(driver, LIVE_WAIT_S, poll_frequency=0.2).until(status)


@dataclass
class LiveRun:
    """What the Live camera page did over ``seconds``: frames processed, their rate, and its last status line."""

    seconds: float
    frames: int
    fps: float
    status: str
    fps_last_window: float  # the page's own count, over its last few seconds
    ms_per_frame: int | None  # processing time of a frame (detect, classify, track, draw), mean


def measured_live_run(driver, url: str, seconds: float) -> LiveRun:
    """Start the Live camera page, let it run ``seconds`` once the first frame is processed, and count."""
    start_live_camera(driver, url)
    first = live_status(driver, min_frames=1)[2]
    start = time.monotonic()
    time.sleep(seconds)
    text, window_fps, frames, ms = live_status(driver, min_frames=first + 1)
    elapsed = time.monotonic() - start
    return LiveRun(round(elapsed, 2), frames - first, round((frames - first) / elapsed, 2), text, window_fps, ms)


def live_picture_pixels(driver, rgb: tuple[int, int, int], tolerance: int = 30) -> int:
    """How many pixels of the live picture (the video the server sends back) are close to colour ``rgb``."""
    from selenium.webdriver.common.by import By

    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe[src*=webrtc]"))
    try:
        return driver.execute_script("""
            const [r, g, b, tol] = arguments;
            const video = document.querySelector('video');
            if (!video || !video.videoWidth) return 0;
            const canvas = document.createElement('canvas');
            canvas.width = video.videoWidth; canvas.height = video.videoHeight;
            const ctx = canvas.getContext('2d');
            ctx.drawImage(video, 0, 0);
            const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < px.length; i += 4)
                if (Math.abs(px[i] - r) < tol && Math.abs(px[i + 1] - g) < tol && Math.abs(px[i + 2] - b) < tol) n++;
            return n;""", *rgb, tolerance)
    finally:
        driver.switch_to.default_content()
