"""Web app latency: from uploading a 640x480 photo to its first prediction on the page (target <= 1 s).

    python -m benchmarks.bench_app [--repeats 5] [--model NAME|PATH] [--no-browser]

Two measurements, each on a warm app (model loaded once per process, as in real use):

* ``apptest``: Streamlit's AppTest sets the upload and reruns the script in-process: decode,
  detection, classification, annotation and building every element of the page.
* ``browser`` (when /usr/bin/chromium and chromedriver exist): ``ferkit app`` on localhost and
  headless chromium; the clock runs from ``send_keys`` on the page's file input until the
  "Face 1: ..." result is in the page, so it adds the HTTP upload, the websocket and the rendering.

Every repeat uploads a different photo (one pixel changed), so no cache answers for the app.
The model is the bundled default unless ``--model`` names another.
Prints a table; writes benchmarks/results/app.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from ferkit.app import MODEL_ENV
from ferkit.fileio import write_text

from benchmarks.bench_infer import cpu_model

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "ferkit" / "app" / "main.py"
PHOTO = ROOT / "ferkit" / "app" / "samples" / "single_happy_astronaut.jpg"
OUT = ROOT / "benchmarks" / "results" / "app.json"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SIZE = (640, 480)
TARGET_S = 1.0
WAIT_S = 60


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
        titles = [e.label for e in at.expander if e.label.startswith("Face 1:")]
        if at.exception or not titles:
            raise SystemExit(f"bench_app: no prediction on the page: {at.exception or at.error}")
    return {"first_page_with_model_load_s": round(first_page_s, 4), **summary(times), "label": titles[0]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"bench_app: `ferkit app` did not start at {url}")


def bench_browser(model: str, repeats: int, tmp: Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    url = f"http://localhost:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ferkit", "app", "--port", str(port), "--headless", "--model", model]
    server = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={tmp / 'profile'}"):
        options.add_argument(flag)
    driver = None
    try:
        wait_for_server(url, server)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        wait = WebDriverWait(driver, WAIT_S)
        result = (By.XPATH, "//*[starts-with(normalize-space(text()), 'Face 1:')]")
        times = []
        for variant in range(repeats + 1):  # the first page load also loads the model: not timed
            photo = tmp / f"photo_{variant}.jpg"
            photo.write_bytes(photo_640x480(variant))
            driver.get(url)
            file_input = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
            wait.until(EC.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Unsure below')]")))
            start = time.perf_counter()
            file_input.send_keys(str(photo))
            label = wait.until(EC.presence_of_element_located(result)).text
            if variant:
                times.append(time.perf_counter() - start)
        return {**summary(times), "label": label}
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed uploads per measurement (default: 5)")
    parser.add_argument("--model", default="default", help="bundled name or .onnx path (default: %(default)s)")
    parser.add_argument("--no-browser", action="store_true", help="skip the chromium measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        results = {
            "what": "seconds from uploading one 640x480 JPEG (1 face) to its prediction on the page, warm app",
            "model": args.model, "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "target_s": TARGET_S,
            "apptest": bench_apptest(args.model, args.repeats),
        }
        if not args.no_browser and CHROMIUM.is_file() and CHROMEDRIVER.is_file():
            results["browser"] = bench_browser(args.model, args.repeats, Path(tmp))
        results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    for kind in ("apptest", "browser"):
        if kind in results:
            r = results[kind]
            verdict = "ok" if r["median_s"] <= TARGET_S else "OVER TARGET"
            print(f"{kind:8s} median {r['median_s']:.3f} s (min {r['min_s']:.3f}, max {r['max_s']:.3f}) {verdict}")
    write_text(OUT, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
