"""``ferkit predict`` through a subprocess, as a user runs it."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

from ferkit.export import default_meta, export_onnx
from ferkit.models import create_model

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "photos"
FAMILY = PHOTOS / "group4_family.jpg"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random.onnx"
    return str(export_onnx(create_model("fastnet"), path, default_meta("fastnet", unsure_threshold=0.3)))


def ferkit(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferkit", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_photo_as_json(model):
    proc = ferkit("predict", str(FAMILY), "--model", model, "--json")
    assert proc.returncode == 0, proc.stderr
    [record] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["source"] == str(FAMILY) and len(record["faces"]) == 4
    face = record["faces"][0]
    assert set(face) == {"box", "label", "confidence", "probabilities", "unsure", "detection_score"}
    assert len(face["probabilities"]) == 7


def test_folder_with_a_bad_file_csv_and_annotate(model, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FAMILY, folder / "family.jpg")
    shutil.copy(PHOTOS / "noface_coffee.jpg", folder / "coffee.jpg")
    (folder / "broken.jpg").write_text("not a picture")
    table, annotated = tmp_path / "faces.csv", tmp_path / "annotated"
    proc = ferkit("predict", str(folder), "--model", model, "--csv", str(table), "--annotate", str(annotated))
    assert proc.returncode == 0, proc.stderr
    assert "broken.jpg is not an image" in proc.stderr and "Traceback" not in proc.stderr
    assert "coffee.jpg: no face found" in proc.stdout and "family.jpg: 4 faces" in proc.stdout
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 4 and [r["face"] for r in rows] == ["1", "2", "3", "4"]
    assert list(rows[0])[:10] == ["source", "face", "x", "y", "w", "h", "label", "confidence", "unsure",
                                  "detection_score"]
    assert all(abs(sum(float(r[c]) for c in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")) - 1)
               < 1e-3 for r in rows)
    written = sorted(p.name for p in annotated.iterdir())
    assert written == ["coffee_annotated.jpg", "family_annotated.jpg"]
    assert cv2.imread(str(annotated / "family_annotated.jpg")).shape == cv2.imread(str(FAMILY)).shape


def test_annotate_one_file(model, tmp_path):
    out = tmp_path / "family.png"
    proc = ferkit("predict", str(FAMILY), "--model", model, "--annotate", str(out), "--tta", "flip",
                  "--detector", "yunet", "--threshold", "0.9")
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "(unsure)" in proc.stdout  # a random model is never 90 % sure


def test_glob_and_missing_sources(model):
    proc = ferkit("predict", str(PHOTOS / "single_*astronaut.jpg"), str(PHOTOS / "nope.jpg"), "--model", model)
    assert proc.returncode == 0, proc.stderr
    assert "single_happy_astronaut.jpg: 1 face" in proc.stdout and "nope.jpg: not found" in proc.stderr


def test_all_inputs_failing_exits_1(model, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    proc = ferkit("predict", str(tmp_path / "bad.png"), "--model", model)
    assert proc.returncode == 1 and "bad.png" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_model_is_one_line(tmp_path):
    proc = ferkit("predict", str(FAMILY), "--model", str(tmp_path / "missing.onnx"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"ferkit: error: model file not found: {tmp_path / 'missing.onnx'}"]


def test_usage_errors_exit_2():
    typo = ferkit("predcit", "x.jpg")
    assert typo.returncode == 2 and "did you mean 'predict'?" in typo.stderr
    option = ferkit("predict", str(FAMILY), "--jsn")
    assert option.returncode == 2 and "did you mean --json?" in option.stderr
    threshold = ferkit("predict", str(FAMILY), "--threshold", "7")
    assert threshold.returncode == 2 and "between 0 and 1" in threshold.stderr
