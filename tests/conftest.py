"""Shared fixtures: where the real data lives, and a tiny FER2013-shaped data folder made on the fly."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit.labels import EMOTIONS, FERPLUS_VOTE_COLUMNS, SPLITS
from ferkit.settings import data_dir

REPO = Path(__file__).resolve().parent.parent
PHOTOS_DIR = REPO.parent / "shared" / "data" / "photos"
NO_TORCH = REPO / "tests" / "no_torch"  # on PYTHONPATH: Python as if torch and onnx were not installed
TINY_PER_CLASS = 2  # faces per class and split in tiny_fer_dir


@pytest.fixture(scope="session")
def fer_data() -> Path:
    """The real FER2013 folder (the tars, fer2013new.csv, README.md); the test is skipped without it."""
    root = data_dir()
    if not (root / "Training.tar.gz").is_file():
        pytest.skip(f"FER2013 data not found at {root} (set FERKIT_DATA)")
    return root


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """The real test photos (see their README.md); the test is skipped without them."""
    if not PHOTOS_DIR.is_dir():
        pytest.skip(f"test photos not found at {PHOTOS_DIR}")
    return PHOTOS_DIR


def tiny_face(row: int) -> np.ndarray:
    """A distinct, deterministic 48x48 uint8 face stand-in for fer2013.csv row ``row``."""
    return np.random.default_rng(row).integers(0, 256, (48, 48), dtype=np.uint8)


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def tiny_fer_dir(tmp_path: Path) -> Path:
    """A FER2013 folder in the shipped layout: 3 split tars of lossless WebP + fer2013new.csv.

    Rows are numbered split by split, class by class; row r shows ``tiny_face(r)``; every FER+ vote
    row gives all 10 votes to the row's FER2013 class, so the FER+ label equals the FER2013 one.
    """
    root = tmp_path / "fer2013"
    root.mkdir()
    header = ["Usage", "Image name", *FERPLUS_VOTE_COLUMNS, "unknown", "NF"]
    lines = [",".join(header)]
    row = 0
    for split in SPLITS:
        members = {}
        for c, name in enumerate(EMOTIONS):
            for _ in range(TINY_PER_CLASS):
                ok, webp = cv2.imencode(".webp", tiny_face(row), [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
                assert ok
                members[f"{split}/{name}/{row}.webp"] = webp.tobytes()
                votes = [10 if FERPLUS_VOTE_COLUMNS[col] == name else 0 for col in FERPLUS_VOTE_COLUMNS]
                lines.append(",".join([split, f"fer{row:07d}.png", *map(str, votes), "0", "0"]))
                row += 1
        (root / f"{split}.tar.gz").write_bytes(_tar_bytes(members))
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    return root
