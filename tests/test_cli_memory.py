"""``ferkit predict`` on a folder of 49 MP photos: decoding is bounded by pixels in flight, not by file count.

The peak (VmHWM of the child process) is measured on six generated 7000x7000 JPEGs. Decoded sixteen
at a time they took 1.39 GB here (2.8 GB for sixteen such photos in issue 13); two at a time
(``PIXELS_IN_FLIGHT``) about 0.9 GB, of which ~0.2 GB is the interpreter, ONNX Runtime and OpenCV.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import NO_TORCH, REPO
from ferkit.predict_cmd import PIXELS_IN_FLIGHT

PHOTOS = 6
SIDE = 7000              # px: 49 MP, just under the 50 MP that ferkit reads
PEAK_CEILING_MB = 1000   # 1.39 GB when all six were decoded at once
TIME_LIMIT_S = 120

# Runs `ferkit predict ARGS` in this child and prints its peak resident memory (kB) last on stderr.
CHILD = """
import sys
from ferkit.cli import main
code = main(sys.argv[1:])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(peak.split()[1], file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def big_photos(tmp_path_factory):
    """Six 7000x7000 JPEGs (a smooth random texture: cheap to encode, full cost to decode)."""
    folder = tmp_path_factory.mktemp("big")
    tile = np.random.default_rng(0).integers(0, 256, (70, 70, 3), dtype=np.uint8)
    image = cv2.resize(tile, (SIDE, SIDE), interpolation=cv2.INTER_LINEAR)
    for i in range(PHOTOS):
        ok, data = cv2.imencode(".jpg", np.roll(image, 50 * i, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 50])
        assert ok
        (folder / f"big{i}.jpg").write_bytes(data.tobytes())
    return folder


@pytest.mark.slow
def test_a_folder_of_49_mp_photos_stays_under_the_ceiling(big_photos):
    assert PIXELS_IN_FLIGHT < PHOTOS * SIDE * SIDE  # the budget splits this folder into groups
    env = os.environ | {"PYTHONPATH": str(NO_TORCH)}  # the plain install: no torch in the process
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CHILD, "predict", str(big_photos), "--json"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=TIME_LIMIT_S)
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == PHOTOS
    peak_mb = int(done.stderr.strip().splitlines()[-1]) / 1024
    assert peak_mb < PEAK_CEILING_MB, f"peak {peak_mb:.0f} MB for {PHOTOS} photos of {SIDE}x{SIDE}"
    assert elapsed < TIME_LIMIT_S
