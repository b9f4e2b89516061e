"""scripts/ship_models.py: a run, and an ensemble as one ONNX graph (ferkit.merge), ship calibrated and reported."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import onnx
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


@pytest.fixture
def shipping(fer_data, tmp_path, monkeypatch):
    """ship_models.py writing into an empty weights folder, on the first FACES faces of each split."""
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
    calibration = ship.calibration_faces
    monkeypatch.setattr(ship, "calibration_faces", lambda: calibration(64))
    return ship, folder


def test_a_run_and_an_ensemble_ship_with_calibration_report_and_manifest_entry(shipping, tmp_path):
    ship, folder = shipping
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


def test_int8_ships_within_the_bar_and_the_float_graph_stays_beyond_it(shipping, tmp_path, monkeypatch):
    ship, folder = shipping
    run = run_folder(tmp_path / "runs" / "a", "fastnet", 0)
    monkeypatch.setattr(ship, "MAX_LOSS_POINTS", -100.0)  # no int8 graph can gain 100 points: refused
    ship.main([f"kept={run}", "--int8", "kept"])
    kept = json.loads((folder / "manifest.json").read_text())["models"]["kept"]
    assert "quantized" not in kept and kept["sha256"] == sha256_of(folder / "kept.onnx")
    assert "QuantizeLinear" not in {n.op_type for n in onnx.load(str(folder / "kept.onnx")).graph.node}

    monkeypatch.setattr(ship, "MAX_LOSS_POINTS", 100.0)
    ship.main([f"small={run}", "--int8", "small"])
    small = json.loads((folder / "manifest.json").read_text())["models"]["small"]
    assert small["quantized"].startswith("static QDQ") and small["sha256"] == sha256_of(folder / "small.onnx")
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(folder / "small.onnx")).graph.node}
    assert small["checkpoint_sha256"] == sha256_of(folder / "small.pt")  # the float weights stay for --from
    recognizer = load("small")
    assert recognizer.pinned_by == "manifest" and "int8" in recognizer.meta["provenance"]
    assert (folder / small["report"] / "metrics.json").is_file()
    ship.main(["small", "--int8", "small"])  # quantizing an int8 graph again is refused, the file untouched
    assert json.loads((folder / "manifest.json").read_text())["models"]["small"]["sha256"] == small["sha256"]


def test_an_ensemble_default_keeps_its_first_members_weights_for_fine_tuning(shipping, tmp_path):
    ship, folder = shipping
    runs = [run_folder(tmp_path / "runs" / "a", "fastnet", 0), run_folder(tmp_path / "runs" / "b", "seed_cnn", 1)]
    ship.main([f"default={runs[0]}"])  # a single model first: its default.pt must not outlive it
    single = sha256_of(folder / "default.pt")

    ship.main([f"default={runs[1]},{runs[0]}"])
    entry = json.loads((folder / "manifest.json").read_text())["models"]["default"]
    assert entry["arch"] == "ensemble" and entry["graph_tta"] == "none"
    assert entry["checkpoint_run"] == "b" and entry["checkpoint_sha256"] == sha256_of(folder / "default.pt") != single
    from ferkit.checkpoint import read_checkpoint

    meta = read_checkpoint(folder / "default.pt")["meta"]
    assert (meta["name"], meta["arch"], meta["provenance"]["run"]) == ("default", "seed_cnn", "b")

    ship.main([f"default={runs[0]},{runs[1]}", "--checkpoint", "none"])  # not kept: no stale default.pt
    assert not (folder / "default.pt").exists()
    assert "checkpoint" not in json.loads((folder / "manifest.json").read_text())["models"]["default"]


def test_a_run_without_the_command_that_trained_it_does_not_ship(shipping, tmp_path):
    ship, folder = shipping
    run = run_folder(tmp_path / "runs" / "a", "fastnet", 0)
    (run / "gpu_call.txt").unlink()
    with pytest.raises(SystemExit, match="no gpu_call.txt"):
        ship.main([f"solo={run}"])
    assert not (folder / "solo.onnx").exists() and not (folder / "solo.pt").exists()


def test_a_file_over_the_bundled_size_limit_does_not_enter_the_manifest(shipping, tmp_path, monkeypatch):
    ship, folder = shipping
    run = run_folder(tmp_path / "runs" / "a", "fastnet", 0)
    monkeypatch.setattr(ship, "MAX_BUNDLED_BYTES", 100 * 1024)  # fastnet's fp32 graph is ~1.5 MB
    with pytest.raises(SystemExit, match=r"solo.onnx: 1.\d MB, over the 0.1 MB a bundled file may have"):
        ship.main([f"solo={run}"])
    assert "solo" not in json.loads((folder / "manifest.json").read_text())["models"]
