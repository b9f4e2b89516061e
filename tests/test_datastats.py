"""ferkit data stats / augment-preview (ferkit.datastats), through the command line as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO, TINY_PER_CLASS
from ferkit import datastats
from ferkit.errors import FerkitError
from ferkit.labels import FERPLUS_EMOTIONS, SPLITS


def _ferkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferkit", *args], cwd=REPO, capture_output=True, text=True, timeout=180)


def _png_shape(path) -> tuple[int, ...]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    return cv2.imread(str(path)).shape


def test_stats_reproduces_the_reports_numbers(fer_data, tmp_path):
    done = _ferkit("data", "stats", "--data", str(fer_data), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    fer_table, plus_table = done.stdout.split("\n\n")[:2]
    lines = {line.split()[0]: line for line in fer_table.splitlines()}
    assert lines["total"].split()[:2] == ["total", "28,709"]
    assert lines["sad"].split()[:3] == ["sad", "4,830", "16.82"]
    assert lines["disgust"].split()[:3] == ["disgust", "436", "1.52"]
    assert lines["happy"].split()[:3] == ["happy", "7,215", "25.13"]
    plus_lines = {line.split()[0]: line for line in plus_table.splitlines()}
    assert plus_table.startswith("FER+ majority labels") and "contempt" in plus_lines and "dropped" in plus_lines

    counts = json.loads((tmp_path / "counts.json").read_text())
    training = counts["fer2013"]["Training"]
    assert training["total"] == 28709
    assert training["classes"]["sad"] == {"count": 4830, "percent": pytest.approx(16.8240, abs=1e-4)}
    assert [counts["fer2013"][s]["total"] for s in SPLITS] == [28709, 3589, 3589]
    for split in SPLITS:
        plus = counts["ferplus"][split]
        assert list(plus["classes"]) == list(FERPLUS_EMOTIONS)
        assert plus["total"] + plus["dropped"] == counts["fer2013"][split]["total"]
        assert sum(c["count"] for c in plus["classes"].values()) == plus["total"]

    h, w, _ = _png_shape(tmp_path / "class_distribution.png")
    assert w > 600 and h > 400
    h7, _, _ = _png_shape(tmp_path / "samples_per_class.png")
    h8, _, _ = _png_shape(tmp_path / "samples_per_class_ferplus.png")
    assert h8 > h7  # one more row: contempt
    for png in tmp_path.glob("*.png"):
        assert png.stat().st_size < 300_000, png


def test_stats_on_a_tiny_folder_without_ferplus(tiny_fer_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    assert datastats.main(["stats", "--data", str(tiny_fer_dir), "--out", str(tmp_path / "out"), "--no-ferplus",
                         "--per-class", "2"]) == 0
    printed = capsys.readouterr().out
    assert "FER+" not in printed
    counts = json.loads((tmp_path / "out" / "counts.json").read_text())
    assert list(counts) == ["data", "fer2013"]
    assert counts["fer2013"]["PublicTest"]["classes"]["fear"] == {"count": TINY_PER_CLASS,
                                                                  "percent": pytest.approx(100 / 7, abs=1e-4)}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["class_distribution.png", "counts.json",
                                                                   "samples_per_class.png"]


def test_stats_missing_data_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nowhere"
    done = _ferkit("data", "stats", "--data", str(missing), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and str(missing / "Training.tar.gz") in done.stderr
    assert not (tmp_path / "out").exists()


def test_format_table_columns():
    counts = {"A": {"total": 3, "classes": {"x": {"count": 1, "percent": 100 / 3}, "y": {"count": 2, "percent": 200 / 3}}}}
    text = datastats.format_table(counts, "T", dropped={"A": 4})
    lines = text.splitlines()
    assert lines[0] == "T" and lines[2].split() == ["class", "A"]
    assert lines[4].split() == ["x", "1", "33.33", "%"] and lines[5].split() == ["y", "2", "66.67", "%"]
    assert lines[-2].split() == ["total", "3", "100.00", "%"] and lines[-1].split() == ["dropped", "4"]


def test_augment_preview_writes_a_png(fer_data, tmp_path):
    out = tmp_path / "aug.png"
    done = _ferkit("data", "augment-preview", "--data", str(fer_data), "--out", str(out), "--n", "3", "--views", "4")
    assert done.returncode == 0, done.stderr
    h, w, _ = _png_shape(out)
    assert w > h  # 3 rows of 1 + 4 faces


def test_augmented_views_are_seeded_and_change_the_faces():
    pytest.importorskip("torch")
    faces = np.stack([np.random.default_rng(i).integers(0, 256, (48, 48), dtype=np.uint8) for i in range(2)])
    a = datastats.augmented_views(faces, 3, "default", seed=5)
    assert a.shape == (2, 3, 48, 48) and a.dtype == np.uint8
    assert np.array_equal(a, datastats.augmented_views(faces, 3, "default", seed=5))
    assert not np.array_equal(a[:, 0], faces)


def test_augment_preview_without_torch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(FerkitError, match=r"needs torch .*pip install 'ferkit\[train\]'"):
        datastats.augmented_views(np.zeros((1, 48, 48), np.uint8), 2, "default", 0)


def test_round_robin_takes_each_class_in_turn():
    per_class = [np.array([1, 2]), np.array([]), np.array([3])]
    assert [(int(f), c) for f, c in datastats.round_robin(per_class, 3)] == [(1, 0), (3, 2), (2, 0)]
