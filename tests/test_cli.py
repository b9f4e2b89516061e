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


# --- outputs never replace inputs, the model's checksum, one line per failure (issues 13 and 14) ----------------


def ferkit_here(capsys, *args: str) -> tuple[int, str, str]:
    """``ferkit ARGS`` in this process (fast, and monkeypatches apply): exit status, stdout, stderr."""
    from ferkit.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def photo(tmp_path) -> Path:
    copy = tmp_path / "photo.jpg"
    shutil.copy(FAMILY, copy)
    return copy


@pytest.mark.parametrize("option", ["--annotate", "--csv"])
def test_an_output_over_the_input_is_refused(model, photo, capsys, option):
    before = photo.read_bytes()
    code, out, err = ferkit_here(capsys, "predict", str(photo), "--model", model, option, str(photo))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"ferkit: error: {option} {photo} would overwrite an input: ferkit never "
                                        "writes over its inputs; choose another name"]
    assert photo.read_bytes() == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_an_output_that_is_the_input_through_a_link_is_refused(model, photo, capsys, link):
    alias = photo.with_name("alias.jpg")
    (alias.symlink_to if link == "symlink" else alias.hardlink_to)(photo)
    before = photo.read_bytes()
    code, _, err = ferkit_here(capsys, "predict", str(photo), "--model", model, "--annotate", str(alias))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--annotate {alias} would overwrite an input (the same file as the input {photo})" in err
    assert photo.read_bytes() == before and alias.read_bytes() == before


def test_a_folder_run_refuses_to_annotate_over_one_of_its_images(model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(FAMILY, folder / "family.jpg")
    shutil.copy(FAMILY, folder / "family_annotated.jpg")  # where --annotate in/ would write family's copy
    code, _, err = ferkit_here(capsys, "predict", str(folder), "--model", model, "--annotate", str(folder))
    assert code == 2 and "family_annotated.jpg would overwrite an input" in err


def test_each_image_is_decoded_once(model, tmp_path, capsys, monkeypatch):
    from ferkit import images

    decoded = []
    decode = images._decode
    monkeypatch.setattr(images, "_decode", lambda fp, where: decoded.append(where) or decode(fp, where))
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(FAMILY, folder / name)
    (folder / "broken.jpg").write_text("not a picture")
    code, out, _ = ferkit_here(capsys, "predict", str(folder), "--model", model, "--csv", str(tmp_path / "t.csv"),
                               "--annotate", str(tmp_path / "out"))
    assert code == 0 and out.count("4 faces") == 2
    assert sorted(Path(w).name for w in decoded) == ["a.jpg", "b.jpg", "broken.jpg"]


def test_an_unpinned_model_prints_its_sha256_and_sha256_pins_it(model, capsys):
    from ferkit.fileio import sha256_of

    unpinned = Path(model).with_name("unpinned.onnx")
    shutil.copy(model, unpinned)  # no unpinned.onnx.sha256 beside it
    digest = sha256_of(unpinned)
    code, out, err = ferkit_here(capsys, "predict", str(FAMILY), "--model", str(unpinned), "--json")
    assert code == 0 and json.loads(out)["model_sha256"] == digest
    assert f"its SHA-256 is {digest}: pass --sha256 {digest} to pin it" in err
    code, out, err = ferkit_here(capsys, "predict", str(FAMILY), "--model", str(unpinned), "--sha256", digest)
    assert code == 0 and err == "" and "4 faces" in out
    wrong = "0" * 64
    code, out, err = ferkit_here(capsys, "predict", str(FAMILY), "--model", str(unpinned), "--sha256", wrong)
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [f"ferkit: error: checksum mismatch for model unpinned.onnx ({unpinned}): "
                                        f"expected {wrong} (--sha256), got {digest}"]


@pytest.mark.parametrize("manifest, message", [
    ([], "it holds a JSON list, not an object"),
    ({"models": {"default": {"file": "default.onnx"}}}, "models.default has no sha256 (64 hex digits)"),
    ({"detectors": {"yunet": "yunet.onnx"}}, "detectors.yunet is not an object"),
])
def test_a_damaged_manifest_is_one_line(tmp_path, monkeypatch, capsys, manifest, message):
    from ferkit import weights

    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    monkeypatch.setattr(weights, "MANIFEST", path)
    code, _, err = ferkit_here(capsys, "predict", str(FAMILY))
    assert code == 1
    assert err.strip().splitlines() == [f"ferkit: error: the weights manifest {path} is damaged: {message}; "
                                        "reinstall ferkit"]


def test_a_cache_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").write_text("")
    for cache in (tmp_path / "cache", tmp_path / "cache" / "sub"):
        monkeypatch.setenv("FERKIT_CACHE", str(cache))
        code, _, err = ferkit_here(capsys, "data", "stats", "--out", str(tmp_path / "out"))
        assert code == 1 and not (tmp_path / "out").exists()
        assert err.strip().splitlines() == [f"ferkit: error: the cache folder {cache} cannot be made: "
                                            f"{tmp_path / 'cache'} is a file (set FERKIT_CACHE to a folder, or unset it)"]
