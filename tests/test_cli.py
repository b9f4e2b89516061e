"""``ferkit predict`` through a subprocess, as a user runs it."""

import argparse
import csv
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
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
    assert f"ferkit: skipped {folder / 'broken.jpg'}: not an image (or not in a format" in proc.stderr
    assert "Traceback" not in proc.stderr
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
                                            f"{tmp_path / 'cache'} is a file (set FERKIT_CACHE to a folder, "
                                            "or unset it)"]


# --- outputs named as the user expects, plain skip lines, run folders as models (issue 15) ------------------------


def test_a_file_name_for_several_annotated_copies_is_refused(model, tmp_path, capsys):
    out = tmp_path / "one_out.png"
    code, stdout, err = ferkit_here(capsys, "predict", str(FAMILY), str(PHOTOS / "single_happy_astronaut.jpg"),
                                    "--model", model, "--annotate", str(out))
    assert code == 2 and stdout == ""
    assert err.strip().splitlines() == [f"ferkit: error: --annotate {out} names a file, but 2 inputs need an annotated "
                                        f"copy each: name a folder, e.g. --annotate {tmp_path / 'one_out'}/"]
    assert not out.exists()  # once: a folder named one_out.png


def test_skip_lines_name_the_file_then_a_plain_reason(model, tmp_path, capsys):
    cut, header, notes = tmp_path / "cut.jpg", tmp_path / "header.png", tmp_path / "notes.jpg"
    cut.write_bytes(FAMILY.read_bytes()[:3000])
    header.write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # Pillow: "Truncated File Read"
    notes.write_text("not a picture")
    code, _, err = ferkit_here(capsys, "predict", str(cut), str(header), str(notes), str(tmp_path / "nope.jpg"),
                               "--model", model)
    assert code == 1
    assert err.strip().splitlines() == [
        f"ferkit: skipped {tmp_path / 'nope.jpg'}: not found",
        f"ferkit: skipped {cut}: the file is truncated or corrupt",
        f"ferkit: skipped {header}: the file is truncated or corrupt",
        f"ferkit: skipped {notes}: not an image (or not in a format ferkit reads: JPG, JPEG, PNG, WEBP, BMP, TIF, "
        "TIFF, GIF, AVIF)",
        "ferkit: 0 input(s) processed, 4 skipped",
    ]


def test_model_help_lists_every_bundled_model(capsys):
    from ferkit.weights import read_manifest

    with pytest.raises(SystemExit) as done:
        ferkit_here(capsys, "predict", "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    for name, entry in read_manifest()["models"].items():
        assert f"{name} ({entry['arch']}, {len(entry['classes'])} classes)" in help_text


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A ferkit train run folder as training leaves it: best.pt (the bundled fast checkpoint here) and args.json."""
    from ferkit.settings import WEIGHTS_DIR

    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    shutil.copy(WEIGHTS_DIR / "fast.pt", run / "best.pt")
    (run / "args.json").write_text(json.dumps({"name": "mine", "out": str(run)}))
    return run


def test_a_run_folder_is_a_model_exported_once(run_folder, tmp_path):
    from conftest import NO_TORCH
    from ferkit import load

    env = os.environ | {"FERKIT_DATA": str(tmp_path / "no_data")}  # verified on random faces, as on a laptop
    no_torch = env | {"PYTHONPATH": str(NO_TORCH)}

    def predict(env: dict) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ferkit", "predict", str(PHOTOS / "single_happy_astronaut.jpg"),
                               "--model", str(run_folder)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)

    first, onnx = predict(env), run_folder / "mine.onnx"
    assert first.returncode == 0, first.stderr
    assert f"ferkit: note: exported {run_folder / 'best.pt'} to {onnx}" in first.stderr and "1 face" in first.stdout
    assert (run_folder / "mine.onnx.sha256").is_file()
    exported = onnx.stat().st_mtime_ns
    assert load(run_folder / "best.pt").source == str(onnx) and onnx.stat().st_mtime_ns == exported  # reused
    cached = predict(no_torch)
    assert cached.returncode == 0 and f"ferkit: note: using {onnx}" in cached.stderr
    os.utime(run_folder / "best.pt")  # trained further: the export is stale, and torch is missing
    stale = predict(no_torch)
    assert stale.returncode == 1
    assert stale.stderr.strip().splitlines() == [
        f"ferkit: error: {run_folder / 'best.pt'} is a PyTorch checkpoint and exporting it needs torch, not installed "
        f"here: run `ferkit export {run_folder / 'best.pt'} --out {onnx}` where it is (pip install 'ferkit[train]'), "
        f"then pass --model {onnx}"]


def test_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    code, _, err = ferkit_here(capsys, "predict", str(FAMILY), "--model", str(tmp_path))
    assert code == 1
    assert err.strip().splitlines() == [f"ferkit: error: {tmp_path} is a folder without best.pt or weights.pt: pass a "
                                        "ferkit train run folder, its best.pt, or an .onnx file"]


# --- every option's help states its default ---------------------------------------------------------------------


def parsers_of(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``parser`` and its sub-command parsers, nested ones included, each with its command line name."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sub_parser in action.choices.items():
                yield from parsers_of(sub_parser, f"{name} {sub}")


def test_every_option_help_states_its_default():
    from ferkit.cli import COMMANDS

    silent = []
    for command, (module, _) in COMMANDS.items():
        for name, parser in parsers_of(importlib.import_module(module).get_args_parser(), f"ferkit {command}"):
            silent += [f"{name} {'/'.join(action.option_strings)}" for action in parser._actions
                       if action.option_strings and not isinstance(action, argparse._HelpAction)
                       and "default" not in (action.help or "")]
    assert silent == []
