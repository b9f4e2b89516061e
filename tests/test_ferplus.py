"""The 8-class FER+ model end to end: Python API, CLI and app, with the bundled weights."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ferkit
from ferkit.app import MODEL_ENV
from ferkit.labels import FERPLUS_EMOTIONS

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
APP = ROOT / "ferkit" / "app" / "main.py"


@pytest.mark.parametrize("name", ["ferplus", "ferplus_fast", "ferplus_best"])
def test_every_ferplus_tier_loads_with_its_eight_classes(name):
    recognizer = ferkit.load(name)
    assert tuple(recognizer.classes) == FERPLUS_EMOTIONS
    faces = recognizer.predict(PHOTOS / "single_happy_astronaut.jpg")
    assert len(faces) == 1
    assert set(faces[0].probabilities) == set(FERPLUS_EMOTIONS)
    assert sum(faces[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert faces[0].label == "happy"


def test_cli_predict_with_the_ferplus_model():
    proc = subprocess.run(
        [sys.executable, "-m", "ferkit", "predict", str(PHOTOS / "group4_family.jpg"), "--model", "ferplus", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    faces = [face for record in records for face in record["faces"]]
    assert len(faces) == 4
    assert all(set(face["probabilities"]) == set(FERPLUS_EMOTIONS) for face in faces)
    assert sum(face["label"] == "happy" for face in faces) >= 3


def test_app_with_the_ferplus_model(monkeypatch):
    monkeypatch.setenv(MODEL_ENV, "ferplus")
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    at.file_uploader(key="uploads").set_value(
        [("astronaut.jpg", (PHOTOS / "single_happy_astronaut.jpg").read_bytes(), "image/jpeg")]).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert {f"p_{c}" for c in FERPLUS_EMOTIONS} <= set(table.columns)
    assert table["label"][0] == "happy"
    assert len(at.get("progress")) == len(FERPLUS_EMOTIONS)  # one probability bar per class
