"""The app in a real browser: `ferkit app` on localhost, Debian's headless chromium driven by selenium.

Needs /usr/bin/chromium and /usr/bin/chromedriver (scripts/install_browser.sh installs both).
FERKIT_DOCS_SCREENSHOT=1 also writes the screenshots to docs/img/app_<page>.png.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferkit.app import harness

if not harness.has_chromium():
    pytest.skip(f"{harness.CHROMIUM} or {harness.CHROMEDRIVER} is missing (run scripts/install_browser.sh)",
                allow_module_level=True)

from conftest import NO_TORCH, PHOTOS_DIR, REPO
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from test_app import shown_label

pytestmark = pytest.mark.browser

PHOTO = REPO / "ferkit" / "app" / "samples" / "single_happy_astronaut.jpg"
DOCS_IMG = REPO / "docs" / "img"
RESULT_WAIT_S = 60
# url path -> a text the page shows once its script has run to the end
PAGE_DONE = {
    "video": "Upload a short clip",
    "preprocessing": "Edge pixels:",
    "data": "Sample faces",
    "model": "Evaluation report",
}
NO_DATA = "FER2013 is not on this computer"  # what the Data page says without the data
FIRST_FACE = (By.XPATH, "//*[starts-with(normalize-space(text()), 'Face 1:')]")
SUMMARY = (By.XPATH, "//*[contains(text(), 'found in 1 image')]")
TWELVE_SUMMARY = (By.XPATH, "//*[contains(text(), 'found in 12 images')]")
MAX_TWELVE_PHOTOS_PX = 4000  # page height for the 12 test photos (once 8,000+ px, one expander per face)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`ferkit app` with the bundled default model on a free port, run from an empty folder; always stopped afterwards.

    The server runs as if torch and onnx were not installed (tests/no_torch), as in the venv of the
    README's first command.
    """
    with harness.serve(tmp_path_factory.mktemp("server"), pythonpath=[NO_TORCH]) as served:
        yield served.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = harness.chromium(tmp_path_factory.mktemp("chromium-profile"), window=(1400, 1150))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(browser, tmp_path: Path, page: str) -> None:
    harness.screenshot(browser, tmp_path / f"app_{page}.png", DOCS_IMG)


def test_upload_photo_shows_faces(app_url, browser, tmp_path):
    browser.get(app_url)
    wait = WebDriverWait(browser, RESULT_WAIT_S)
    file_input = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    file_input.send_keys(str(PHOTO))
    assert wait.until(EC.presence_of_element_located(SUMMARY)).text == "1 face found in 1 image"
    title = wait.until(EC.presence_of_element_located(FIRST_FACE)).text
    assert shown_label(title) == "happy", title
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=stDataFrame]")))
    time.sleep(1)  # let the images and the table paint before the screenshot
    screenshot(browser, tmp_path, "analyse")


@pytest.mark.parametrize("page", PAGE_DONE)
def test_page_renders_without_error(page, app_url, browser, tmp_path):
    browser.get(f"{app_url}/{page}")
    done = (By.XPATH, f"//*[contains(text(), '{PAGE_DONE[page]}')] | //*[contains(text(), '{NO_DATA}')]")
    WebDriverWait(browser, RESULT_WAIT_S).until(EC.presence_of_element_located(done))
    time.sleep(1)  # let the last elements paint
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=stException]")
    screenshot(browser, tmp_path, page)


def test_twelve_photos_fit_a_short_page(app_url, browser, tmp_path):
    photos = sorted(PHOTOS_DIR.glob("*.jpg"))
    if len(photos) != 12:
        pytest.skip(f"the 12 test photos are not at {PHOTOS_DIR}")
    browser.get(app_url)
    wait = WebDriverWait(browser, RESULT_WAIT_S)
    file_input = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
    file_input.send_keys("\n".join(map(str, photos)))
    wait.until(EC.presence_of_element_located(TWELVE_SUMMARY))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=stDataFrame]")))
    time.sleep(1)
    height = browser.execute_script("return document.querySelector('[data-testid=stMain]').scrollHeight")
    print(f"12 photos: a {height}-px page")
    assert height < MAX_TWELVE_PHOTOS_PX, f"12 photos make a {height}-px page"
    assert browser.find_elements(By.CSS_SELECTOR, "[data-testid=stVegaLiteChart]")  # the batch chart
    screenshot(browser, tmp_path, "analyse_batch")


def test_the_load_benchmark_runs_bounded(tmp_path):
    """benchmarks/bench_app_load.py end to end, small: 2 sessions x 1 upload (the documented run is 8 x 5)."""
    out = tmp_path / "app_load.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_app_load", "--sessions", "2", "--uploads", "1",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["uploads"] == 2 and report["errors"] == 0 and report["median_s"] <= report["p95_s"]
    assert report["server_rss_mb"]["after"] > 0 and "2 sessions x 1 uploads" in done.stdout
