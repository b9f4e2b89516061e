"""The app in a real browser: `ferkit app` on localhost, Debian's headless chromium driven by selenium.

Needs /usr/bin/chromium and /usr/bin/chromedriver (scripts/install_browser.sh installs both).
FERKIT_DOCS_SCREENSHOT=1 also writes the screenshots to docs/img/app_<page>.png.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing (run scripts/install_browser.sh)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from conftest import NO_TORCH, REPO  # noqa: E402
from test_app import shown_label  # noqa: E402
from ferkit.app import MODEL_ENV  # noqa: E402
from ferkit.fileio import write_bytes  # noqa: E402

pytestmark = pytest.mark.browser

PHOTO = REPO / "ferkit" / "app" / "samples" / "single_happy_astronaut.jpg"
DOCS_IMG = REPO / "docs" / "img"
DOCS_SCREENSHOT_ENV = "FERKIT_DOCS_SCREENSHOT"
SERVER_START_S = 60
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, server: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"`ferkit app` exited with {server.returncode} before serving:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"`ferkit app` did not answer at {url} within {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`ferkit app` with the bundled default model on a free port, run from an empty folder; always stopped afterwards.

    The server runs as if torch and onnx were not installed (tests/no_torch), as in the venv of the
    README's first command.
    """
    tmp_path = tmp_path_factory.mktemp("server")
    env = {k: v for k, v in os.environ.items() if k != MODEL_ENV} | {"PYTHONPATH": os.pathsep.join([str(NO_TORCH), str(REPO)])}
    port = free_port()
    command = [sys.executable, "-m", "ferkit", "app", "--port", str(port), "--headless"]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://localhost:{port}"
            wait_for_health(url, server, SERVER_START_S, log_path)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1150", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(browser, tmp_path: Path, page: str) -> None:
    """Save a screenshot to tmp_path, and to docs/img/app_<page>.png when $FERKIT_DOCS_SCREENSHOT is set."""
    path = tmp_path / f"app_{page}.png"
    assert browser.save_screenshot(str(path))
    if os.environ.get(DOCS_SCREENSHOT_ENV):
        write_bytes(DOCS_IMG / path.name, path.read_bytes())


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
