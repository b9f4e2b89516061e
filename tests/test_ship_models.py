"""scripts/ship_models.py: a run, and an ensemble as one ONNX graph (ferkit.merge), ship calibrated and reported."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from ferkit.data import load_split
from ferkit.evaluate import write_logits_npz
from ferkit.export import export_onnx
from ferkit.fileio import sha256_of
from ferkit.infer import load
from ferkit.labels import EMOTIONS
from test_merge import write_member

ROOT = Path(__file__).resolve().parents[1]
FACES = 400  # of each split: enough to fit a temperature and an unsure threshold (>= 50), a few seconds on a CPU


def ship_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ship_models", ROOT / "scripts" / "ship_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_folder(path: Path, arch: str, seed: int) -> Path:
    """What a run leaves after scripts/gpu/pack_runs.py: weights.pt (float16) and logits.npz."""
    write_member(path / "weights.pt", arch, seed, 1.0, packed=True)
    public = load_split("PublicTest").subset(slice(FACES))
    logits = load(export_onnx(path / "weights.pt", path / "own.onnx"), detector="haar").logits_faces(public.images)
    write_logits_npz(path / "logits.npz", EMOTIONS, {"PublicTest": ({"none": logits}, public.labels)})
    (path / "gpu_call.txt").write_text(f"train {path.name}\n")
    return path


def test_a_run_and_an_ensemble_ship_with_calibration_report_and_manifest_entry(fer_data, tmp_path, monkeypatch):
    import ferkit.weights as weights

    ship = ship_script()
    folder = tmp_path / "weights"
    folder.mkdir()
    detectors = weights.read_manifest()["detectors"]
    for entry in detectors.values():
        shutil.copy(weights.WEIGHTS_DIR / entry["file"], folder / entry["file"])
    (folder / "manifest.json").write_text(json.dumps({"models": {}, "detectors": detectors}))
    for module in (ship, weights):
        monkeypatch.setattr(module, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(weights, "MANIFEST", folder / "manifest.json")
    monkeypatch.chdir(tmp_path)
    load_faces, evaluate = ship.load_faces, ship.evaluate_main  # the whole splits in real use
    monkeypatch.setattr(ship, "load_faces", lambda *a: load_faces(*a).subset(slice(FACES)))
    monkeypatch.setattr(ship, "evaluate_main", lambda argv: evaluate([*argv, "--limit", str(FACES)]))
    runs = [run_folder(tmp_path / "runs" / "a", "fastnet", 0), run_folder(tmp_path / "runs" / "b", "seed_cnn", 1)]

    ship.main([f"solo={runs[0]}", f"best={runs[0]},{runs[1]}:3", "--flip"])
    models = json.loads((folder / "manifest.json").read_text())["models"]
    solo, entry = models["solo"], models["best"]
    assert solo["checkpoint_sha256"] == sha256_of(folder / "solo.pt") and solo["accuracy"]["tta"] == "none"
    assert entry["sha256"] == sha256_of(folder / "best.onnx") and entry["arch"] == "ensemble"
    assert [(m["run"], m["weight"]) for m in entry["members"]] == [("a", 0.25), ("b", 0.75)]
    assert entry["graph_tta"] == "flip" and entry["trained_by"] == "train a | train b"
    assert entry["accuracy"]["split"] == "PrivateTest" and entry["accuracy"]["tta"] == "flip"
    assert 0 <= entry["accuracy"]["value"] <= 1 and (folder / entry["report"] / "metrics.json").is_file()
    assert not (folder / "best.pt").exists() and not (folder / "best.onnx.sha256").exists()
    recognizer = load("best")
    assert recognizer.pinned_by == "manifest" and recognizer.meta["graph_tta"] == "flip"
    assert recognizer.meta["provenance"]["calibrated_on"].startswith("PublicTest, the merged graph")
    # each member was calibrated on its own PublicTest logits before merging
    assert all(m["temperature"] != 1.0 for m in recognizer.meta["members"])
