"""ONNX export: every registered architecture matches PyTorch, metadata round-trips, the CLI exports a checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ferkit.data import load_split
from ferkit.errors import ModelError
from ferkit.checkpoint import load_checkpoint
from ferkit.export import MAX_PROB_DIFF, export_onnx, verify_onnx
from ferkit.meta import default_meta
from ferkit.fileio import sha256_of
from ferkit.infer import load
from ferkit.labels import FERPLUS_EMOTIONS
from ferkit.models import create_model, list_models

ROOT = Path(__file__).resolve().parents[1]
FACES = 128  # PublicTest faces per architecture (the CLI checks the whole split)


@pytest.fixture(scope="module")
def public_faces() -> np.ndarray:
    return load_split("PublicTest").images[:FACES]


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """A random model whose BatchNorm statistics are not the identity, so eval-mode export is really tested."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", list_models())
def test_export_matches_pytorch(arch, public_faces, tmp_path):
    torch.manual_seed(0)
    model = randomised(create_model(arch))
    meta = default_meta(arch, temperature=0.5)  # a sharp softmax makes small logit differences visible
    path = export_onnx(model, tmp_path / f"{arch}.onnx", meta)
    diff = verify_onnx(model, path, public_faces, meta)
    assert diff <= MAX_PROB_DIFF
    # the graph follows the contract: input (N, 1, 48, 48) with a dynamic N, output logits (N, 7)
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_metadata_round_trips_and_sidecar(tmp_path):
    meta = default_meta("fastnet", FERPLUS_EMOTIONS, name="mine", temperature=1.7, unsure_threshold=0.35)
    path = export_onnx(create_model("fastnet", num_classes=8), tmp_path / "m.onnx", meta)
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(props["ferkit"]) == meta
    assert (tmp_path / "m.onnx.sha256").read_text().split()[0] == sha256_of(path)
    recognizer = load(path)
    assert recognizer.meta == meta and recognizer.classes == FERPLUS_EMOTIONS
    probs = recognizer.predict_faces(load_split("PublicTest").images[:5])
    assert probs.shape == (5, 8) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_bare_model_needs_meta(tmp_path):
    with pytest.raises(ValueError, match="meta"):
        export_onnx(create_model("fastnet"), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="temperature"):
        export_onnx(create_model("fastnet"), tmp_path / "m.onnx", default_meta("fastnet", temperature=0))


def save_checkpoint(path: Path, arch: str = "fastnet") -> dict:
    """A checkpoint laid out as docs/design.md says ``ferkit train`` writes it."""
    torch.manual_seed(1)
    model = randomised(create_model(arch))
    meta = default_meta(arch, name="tiny", temperature=1.3, unsure_threshold=0.4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.save({"model": model.state_dict(), "arch": arch, "model_kwargs": {}, "meta": meta,
                "optimizer": optimizer.state_dict(), "scheduler": None, "scaler": None, "epoch": 3,
                "best_metric": 0.5, "args": {"arch": arch}, "rng": {"torch": torch.get_rng_state()}}, path)
    return meta


def test_load_checkpoint(tmp_path):
    meta = save_checkpoint(tmp_path / "best.pt")
    model, loaded = load_checkpoint(tmp_path / "best.pt")
    assert loaded["temperature"] == meta["temperature"] and not model.training
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_cli_exports_and_verifies_a_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "exported" / "tiny.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "ferkit", "export", str(tmp_path / "best.pt"), "--out", str(out),
         "--verify-split", "PublicTest", "--temperature", "2.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verified on PublicTest (3589 faces)" in proc.stdout
    meta = load(out).meta
    assert meta["temperature"] == 2.0 and meta["name"] == "tiny" and meta["unsure_threshold"] == 0.4


def test_cli_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ferkit", "export", str(tmp_path / "nope.pt"), "--out",
                           str(tmp_path / "x.onnx")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("ferkit: error: checkpoint not found") and "Traceback" not in proc.stderr


def test_export_without_the_fer2013_data_verifies_on_random_faces(tmp_path):
    """A fine-tuned model on a laptop without FER2013: exit 0, verified, never 'written, then failed'."""
    save_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "mine.onnx"
    env = {**os.environ, "FERKIT_DATA": str(tmp_path / "no-data-here")}
    proc = subprocess.run([sys.executable, "-m", "ferkit", "export", str(tmp_path / "best.pt"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "verified on 256 random faces (FER2013 PublicTest is not here" in proc.stdout
    assert f"ferkit predict --model {out}" in proc.stdout and load(out).name == "tiny"


def test_a_failed_verification_writes_nothing(tmp_path, monkeypatch):
    import ferkit.export as export

    save_checkpoint(tmp_path / "best.pt")
    monkeypatch.setattr(export, "verify_onnx", lambda *a, **k: 0.5)
    with pytest.raises(ModelError, match="disagrees with PyTorch .*nothing was written"):
        export.main([str(tmp_path / "best.pt"), "--out", str(tmp_path / "x.onnx")])
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.onnx.sha256").exists()
