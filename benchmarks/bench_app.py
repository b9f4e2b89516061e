"""Web app latency: from uploading a 640x480 photo to its first prediction on the page (target <= 1 s),
and the frames per second the Live camera page processes.

    python -m benchmarks.bench_app [--repeats 5] [--model NAME|PATH] [--no-browser] [--camera-s 20]

Three measurements, each on a warm app (model loaded once per process, as in real use):

* ``apptest``: Streamlit's AppTest sets the upload and reruns the script in-process: decode,
  detection, classification, annotation and building every element of the page.
* ``browser`` (when /usr/bin/chromium and chromedriver exist): ``ferkit app`` on localhost and
  headless chromium; the clock runs from ``send_keys`` on the page's file input until the
  "Face 1: ..." result is in the page, so it adds the HTTP upload, the websocket and the rendering.
* ``camera`` (the same): chromium's fake camera plays a 640x480, 30 fps clip of the astronaut to the
  Live camera page over WebRTC (no ICE server, 127.0.0.1); the frames the server processed (detected,
  classified, tracked, drawn and sent back) per second over ``--camera-s`` seconds.

Every repeat uploads a different photo (one pixel changed), so no cache answers for the app.
The model is the bundled default unless ``--model`` names another.
Prints a table; writes benchmarks/results/app.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.bench_infer import cpu_model
from ferkit.app import MODEL_ENV, harness
from ferkit.fileio import write_text

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "ferkit" / "app" / "main.py"
PHOTO = ROOT / "ferkit" / "app" / "samples" / "single_happy_astronaut.jpg"
OUT = ROOT / "benchmarks" / "results" / "app.json"
SIZE = (640, 480)
TARGET_S = 1.0
WAIT_S = 60
CAMERA_S = 20.0
READY = "//*[contains(text(), 'Unsure below')]"  # the sidebar has run: the page is ready for an upload
FIRST_FACE = "//*[starts-with(normalize-space(text()), 'Face 1:')]"


def photo_640x480(variant: int) -> bytes:
    """The astronaut portrait as a 640x480 JPEG; ``variant`` changes one pixel so every upload is new."""
    image = cv2.resize(cv2.imread(str(PHOTO)), (640, 640), interpolation=cv2.INTER_CUBIC)[80:560]
    image[0, 0] = (variant * 37 % 256, variant % 256, 0)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok and image.shape[1::-1] == SIZE
    return data.tobytes()


def summary(times: list[float]) -> dict:
    return {"median_s": round(float(np.median(times)), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "runs_s": [round(t, 4) for t in times]}


def bench_apptest(model: str, repeats: int) -> dict:
    from streamlit.testing.v1 import AppTest

    os.environ[MODEL_ENV] = model
    at = AppTest.from_file(str(APP), default_timeout=WAIT_S)
    start = time.perf_counter()
    at.run()
    first_page_s = time.perf_counter() - start
    times = []
    for variant in range(repeats):
        at.file_uploader(key="uploads").set_value(("photo.jpg", photo_640x480(variant), "image/jpeg"))
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
        titles = [m.value.strip("*") for m in at.markdown if m.value.startswith("**Face 1:")]
        if at.exception or not titles:
            raise SystemExit(f"bench_app: no prediction on the page: {at.exception or at.error}")
    return {"first_page_with_model_load_s": round(first_page_s, 4), **summary(times), "label": titles[0]}


def timed_upload(driver, url: str, photo: Path) -> tuple[float, str]:
    """Seconds from giving ``photo`` to a fresh page's file input until its "Face 1: ..." shows, and that text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT_S)
    driver.get(url)
    file_input = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    wait.until(EC.presence_of_element_located((By.XPATH, READY)))
    start = time.perf_counter()
    file_input.send_keys(str(photo))
    label = wait.until(EC.presence_of_element_located((By.XPATH, FIRST_FACE))).text
    return time.perf_counter() - start, label


def bench_browser(model: str, repeats: int, tmp: Path) -> dict:
    with harness.serve(tmp, model=model) as served:
        driver = harness.chromium(tmp / "profile")
        try:
            times = []
            for variant in range(repeats + 1):  # the first page load also loads the model: not timed
                photo = tmp / f"photo_{variant}.jpg"
                photo.write_bytes(photo_640x480(variant))
                elapsed, label = timed_upload(driver, served.url, photo)
                if variant:
                    times.append(elapsed)
        finally:
            driver.quit()
    return {**summary(times), "label": label}


def bench_camera(model: str, seconds: float, tmp: Path) -> dict:
    """Frames per second the Live camera page processes, from chromium's fake camera over WebRTC."""
    clip = harness.fake_camera_clip(PHOTO, tmp / "clip.y4m")
    with harness.serve(tmp, model=model) as served:
        driver = harness.chromium(tmp / "camera-profile", *harness.fake_camera_flags(clip))
        try:
            run = harness.measured_live_run(driver, served.url, seconds)
        finally:
            driver.quit()
    return {"camera_fps": harness.CLIP_FPS, "size": list(harness.CLIP_SIZE), **dataclasses.asdict(run)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed uploads per measurement (default: 5)")
    parser.add_argument("--model", default="default", help="bundled name or .onnx path (default: %(default)s)")
    parser.add_argument("--no-browser", action="store_true", help="skip the chromium measurements")
    parser.add_argument("--camera-s", type=float, default=CAMERA_S,
                        help="seconds of live camera to count frames over (default: %(default)s; 0: skip)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        results = {
            "what": "seconds from uploading one 640x480 JPEG (1 face) to its prediction on the page, warm app",
            "model": args.model, "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "target_s": TARGET_S,
            "apptest": bench_apptest(args.model, args.repeats),
        }
        if not args.no_browser and harness.has_chromium():
            results["browser"] = bench_browser(args.model, args.repeats, Path(tmp))
            if args.camera_s > 0:
                results["camera"] = bench_camera(args.model, args.camera_s, Path(tmp))
        results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    for kind in ("apptest", "browser"):
        if kind in results:
            r = results[kind]
            verdict = "ok" if r["median_s"] <= TARGET_S else "OVER TARGET"
            print(f"{kind:8s} median {r['median_s']:.3f} s (min {r['min_s']:.3f}, max {r['max_s']:.3f}) {verdict}")
    if "camera" in results:
        camera = results["camera"]
        print(f"camera   {camera['fps']:.1f} frames/s processed over {camera['seconds']:.0f} s "
              f"(camera {camera['camera_fps']} fps), {camera['ms_per_frame']} ms of processing per frame")
    write_text(OUT, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
