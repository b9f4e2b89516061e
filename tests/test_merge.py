"""merge.py: one ONNX graph of an ensemble gives the weighted mean of its members' own calibrated probabilities."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ferkit.checkpoint import pack, save_checkpoint
from ferkit.errors import ModelError
from ferkit.export import export_onnx
from ferkit.infer import load
from ferkit.labels import FERPLUS_EMOTIONS
from ferkit.merge import ensemble_model
from ferkit.meta import ENSEMBLE_ARCH, default_meta
from ferkit.models import create_model
from test_checkpoint import crafted_checkpoint
from test_export import randomised

ROOT = Path(__file__).resolve().parents[1]
FACES = np.random.default_rng(0).integers(0, 256, (24, 48, 48), dtype=np.uint8)
# (arch, seed, temperature): two architectures, temperatures far from 1 so a lost calibration shows
MEMBERS = (("fastnet", 0, 0.6), ("seed_cnn", 1, 1.7), ("fastnet", 2, 1.0))


def write_member(path: Path, arch: str, seed: int, temperature: float, packed: bool = False, **meta) -> Path:
    """A checkpoint as ``ferkit train`` writes it (or float16, as scripts/gpu/pack_runs.py packs it)."""
    torch.manual_seed(seed)
    model = randomised(create_model(arch, num_classes=len(meta.get("classes", range(7)))))
    ckpt = {"model": model.state_dict(), "arch": arch, "model_kwargs": {},
            "meta": default_meta(arch, name=path.parent.name, temperature=temperature, unsure_threshold=0.4, **meta)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, pack(ckpt) if packed else ckpt)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[Path]:
    """Three members: two best.pt files and a run folder holding only a packed weights.pt."""
    root = tmp_path_factory.mktemp("members")
    paths = [write_member(root / f"run{i}" / "best.pt", *m) for i, m in enumerate(MEMBERS[:2])]
    write_member(root / "run2" / "weights.pt", *MEMBERS[2], packed=True)
    return [*paths, root / "run2"]


@pytest.fixture(scope="module")
def member_recognizers(members) -> list:
    """Each member exported on its own, through the one Recognizer."""
    out = members[0].parent.parent / "own"
    paths = [m if m.suffix == ".pt" else m / "weights.pt" for m in members]
    return [load(export_onnx(p, out / f"{i}.onnx")) for i, p in enumerate(paths)]


@pytest.mark.parametrize("weights", [None, (3.0, 1.0, 0.5)])
@pytest.mark.parametrize("flip", [False, True])
def test_the_graph_gives_the_weighted_mean_of_its_members(members, member_recognizers, weights, flip, tmp_path):
    model, meta = ensemble_model(members, weights, flip=flip, name="best")
    recognizer = load(export_onnx(model, tmp_path / "best.onnx", meta))
    w = np.ones(3) / 3 if weights is None else np.array(weights) / sum(weights)
    # each member's own calibrated probabilities; the in-graph flip must equal the Recognizer's flip TTA
    expected = sum(wi * r.predict_faces(FACES, "flip" if flip else "none") for wi, r in zip(w, member_recognizers))
    got = recognizer.predict_faces(FACES)
    assert np.abs(got - expected).max() < 1e-5
    assert np.abs(expected - member_recognizers[0].predict_faces(FACES)).max() > 1e-2  # the mean is no member's
    assert (recognizer.name, recognizer.temperature, recognizer.meta["arch"]) == ("best", 1.0, ENSEMBLE_ARCH)
    assert recognizer.meta["graph_tta"] == ("flip" if flip else "none")
    stored = recognizer.meta["members"]
    assert [m["arch"] for m in stored] == [a for a, _, _ in MEMBERS]
    assert [m["temperature"] for m in stored] == [t for _, _, t in MEMBERS]
    assert np.allclose([m["weight"] for m in stored], w)


@pytest.mark.parametrize("change, field", [({"classes": FERPLUS_EMOTIONS}, "classes"), ({"mean": 0.4}, "mean"),
                                           ({"preprocess": "report"}, "preprocess")])
def test_members_that_make_their_input_differently_are_refused(members, tmp_path, change, field):
    other = write_member(tmp_path / "other" / "best.pt", "fastnet", 5, 1.0, **change)
    with pytest.raises(ModelError) as e:
        ensemble_model([members[0], other])
    message = str(e.value)
    assert "\n" not in message and f"differ in {field}" in message and str(other) in message
    assert "must share classes and input preprocessing" in message


def test_member_weights_are_checked(members):
    with pytest.raises(ModelError, match="^2 weights for 3 members"):
        ensemble_model(members, [1.0, 2.0])
    with pytest.raises(ModelError, match="weights must be finite numbers > 0"):
        ensemble_model(members, [1.0, 0.0, 1.0])


def test_a_crafted_member_is_refused_and_nothing_runs(members, tmp_path):
    evil, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(ModelError, match="refused .*evil.pt.*could run code"):
        ensemble_model([members[0], evil])
    out = tmp_path / "best.onnx"
    proc = subprocess.run([sys.executable, "-m", "ferkit", "export", str(members[0]), str(evil), "--out", str(out),
                           "--verify-split", "none"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    [line] = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and line.startswith("ferkit: error: refused") and str(evil) in line
    assert not marker.exists() and not out.exists()


def test_cli_exports_an_ensemble_verified_and_weighted(members, tmp_path):
    out = tmp_path / "best.onnx"
    env = os.environ | {"FERKIT_DATA": str(tmp_path / "no-data")}  # verified on random faces: fast
    command = [sys.executable, "-m", "ferkit", "export", *map(str, members), "--out", str(out), "--name", "best"]
    proc = subprocess.run([*command, "--weights", "2", "1", "1", "--flip"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ensemble of 3, in-graph TTA flip" in proc.stdout and "verified on 256 random faces" in proc.stdout
    meta = load(out).meta
    assert meta["name"] == "best" and [m["weight"] for m in meta["members"]] == [0.5, 0.25, 0.25]
    assert (tmp_path / "best.onnx.sha256").is_file()
    wrong = subprocess.run([*command, "--weights", "1", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert wrong.returncode == 2 and "--weights: 2 weights for 3 checkpoints" in wrong.stderr


# --- the "best" tier through ferkit.load and ferkit predict ---------------------------------------------------


@pytest.fixture
def best_onnx(members, tmp_path) -> Path:
    model, meta = ensemble_model(members, flip=True, name="best")
    return export_onnx(model, tmp_path / "made" / "best.onnx", meta)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch) -> Path:
    """A weights folder with the real manifest's entries (files absent) and the bundled face detector."""
    import ferkit.weights as weights

    manifest = weights.read_manifest()
    folder = tmp_path / "weights"
    folder.mkdir()
    for entry in manifest["detectors"].values():
        shutil.copy(weights.WEIGHTS_DIR / entry["file"], folder / entry["file"])
    manifest["models"].pop("best", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(weights, "MANIFEST", folder / "manifest.json")
    return folder


def add_best(folder: Path, onnx_path: Path) -> None:
    from ferkit.fileio import sha256_of

    shutil.copy(onnx_path, folder / "best.onnx")
    manifest = json.loads((folder / "manifest.json").read_text())
    meta = load(onnx_path).meta
    manifest["models"]["best"] = {"file": "best.onnx", "sha256": sha256_of(folder / "best.onnx"),
                                  "arch": ENSEMBLE_ARCH, "classes": meta["classes"], "graph_tta": "flip",
                                  "members": [{"run": m["source"], "arch": m["arch"]} for m in meta["members"]]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_without_a_best_tier_the_error_names_the_tiers(weights_dir):
    from ferkit.weights import read_manifest

    with pytest.raises(ModelError) as e:
        load("best")
    known = ", ".join(read_manifest()["models"])
    assert str(e.value) == (f"no bundled model named 'best' (bundled: {known}); pass the path of an .onnx file "
                            "written by ferkit export")


def test_best_loads_and_predicts_through_the_one_recognizer(weights_dir, best_onnx, photos_dir, capsys):
    from ferkit.cli import main

    add_best(weights_dir, best_onnx)
    recognizer = load("best")
    assert recognizer.pinned_by == "manifest" and recognizer.meta["graph_tta"] == "flip"
    [face] = recognizer.predict(FACES[0])  # a 48x48 face is taken as one face
    assert face.label in recognizer.classes and abs(sum(face.probabilities.values()) - 1) < 1e-5
    assert len(recognizer.predict(photos_dir / "single_happy_astronaut.jpg")) == 1
    assert main(["predict", str(photos_dir / "single_happy_astronaut.jpg"), "--model", "best", "--json"]) == 0
    [record] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(record["faces"]) == 1
