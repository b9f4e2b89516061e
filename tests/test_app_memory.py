"""The app's memory stays bounded under large uploads (issue 13.3): a real `ferkit app` server, headless
chromium uploading large JPEGs, the server's resident memory read with psutil.

Once every cached analysis kept its full decoded and annotated images (20 uploads of 7000x7000
JPEGs took a server from 483 MB to 6.2 GB); now the cache keeps downscaled previews, bounded in bytes.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.app import harness

if not harness.has_chromium():
    pytest.skip(f"{harness.CHROMIUM} or {harness.CHROMEDRIVER} is missing (run scripts/install_browser.sh)",
                allow_module_level=True)
psutil = pytest.importorskip("psutil")

from conftest import NO_TORCH, REPO
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.browser

PHOTO = REPO / "ferkit" / "app" / "samples" / "single_happy_astronaut.jpg"
UPLOADS = 6
LARGE = (6000, 4000)  # width, height: 24 MP, ~72 MB decoded, ~144 MB with its annotated copy
# Resident memory the uploads may add to the server's after its first upload (model loaded, allocators
# warm). Kept in full, five more 24 MP uploads added 1,064 MB; a remembered preview is ~6.5 MB.
GROWTH_CEILING_MB = 250
RESULT_WAIT_S = 120
SUMMARY = (By.XPATH, "//*[contains(text(), 'found in 1 image')]")


def large_jpeg(path: Path, variant: int) -> Path:
    """A 6000x4000 JPEG of a few MB, like a camera's: the astronaut (one face) on blotches that differ per ``variant``."""
    rng = np.random.default_rng(variant)
    blotches = rng.integers(0, 256, (LARGE[1] // 16, LARGE[0] // 16, 3), dtype=np.uint8)
    canvas = cv2.resize(blotches, LARGE, interpolation=cv2.INTER_CUBIC)
    face = cv2.resize(cv2.imread(str(PHOTO)), (1500, 1500))
    canvas[1000:2500, 2000:3500] = face
    assert cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return path


def upload_and_wait(browser, url: str, photo: Path) -> None:
    browser.get(url)
    wait = WebDriverWait(browser, RESULT_WAIT_S)
    wait.until(EC.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Unsure below')]")))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]"))).send_keys(str(photo))
    wait.until(EC.presence_of_element_located(SUMMARY))


def test_memory_stays_bounded_after_large_uploads(tmp_path):
    photos = [large_jpeg(tmp_path / f"large_{i}.jpg", i) for i in range(UPLOADS)]
    with harness.serve(tmp_path, pythonpath=[NO_TORCH]) as served:
        browser = harness.chromium(tmp_path / "profile")
        try:
            upload_and_wait(browser, served.url, photos[0])  # loads the model, warms every allocator
            before = served.rss()
            for photo in photos[1:]:
                upload_and_wait(browser, served.url, photo)
                print(f"{photo.name}: {photo.stat().st_size / 2**20:.1f} MB, server {served.rss() / 2**20:.0f} MB")
            browser.get("about:blank")
            time.sleep(1)
            after = served.rss()
        finally:
            browser.quit()
    growth_mb = (after - before) / 2**20
    print(f"server RSS {before / 2**20:.0f} MB after one upload, {after / 2**20:.0f} MB after {UPLOADS}")
    assert growth_mb < GROWTH_CEILING_MB, f"{UPLOADS} large uploads grew the server by {growth_mb:.0f} MB"
