"""checkpoint.py: weights_only loads refuse code, truncated files are one-line errors, pack keeps what ships."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ferkit.checkpoint import clean_stale_temps, load_checkpoint, pack, read_checkpoint, save_checkpoint
from ferkit.errors import ModelError
from ferkit.meta import default_meta
from ferkit.models import create_model

ROOT = Path(__file__).resolve().parents[1]


def plain_checkpoint(arch: str = "fastnet") -> dict:
    torch.manual_seed(0)
    return {"model": create_model(arch).state_dict(), "arch": arch, "model_kwargs": {},
            "meta": default_meta(arch, name="tiny"), "epoch": 3, "log": [{"epoch": 1, "val_acc": 0.5}]}


class Payload:
    """Unpickling this runs code: what a crafted checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(folder: Path) -> tuple[Path, Path]:
    """``folder/evil.pt``, a checkpoint whose unpickling would create ``folder/pwned``: (the file, the marker)."""
    path, marker = folder / "evil.pt", folder / "pwned"
    with open(path, "wb") as f:
        torch.save(plain_checkpoint() | {"extra": Payload(str(marker))}, f, pickle_module=pickle)
    return path, marker


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    evil, marker = crafted_checkpoint(tmp_path)
    with pytest.raises(ModelError, match="refused .*evil.pt.*could run code"):
        load_checkpoint(evil)
    assert not marker.exists()
    # through the command line: one line, no traceback, no code run
    proc = subprocess.run([sys.executable, "-m", "ferkit", "export", str(evil), "--out", str(tmp_path / "x.onnx"),
                           "--verify-split", "none"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "refused" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not marker.exists()


def test_a_crafted_ensemble_member_is_refused_and_nothing_runs(tmp_path):
    evil, marker = crafted_checkpoint(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ferkit", "ensemble", str(evil), "--out", str(tmp_path / "e.npz"),
                           "--device", "cpu"], cwd=ROOT, capture_output=True, text=True)
    [line] = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and line.startswith("ferkit: error: refused") and str(evil) in line
    assert not marker.exists() and not (tmp_path / "e.npz").exists()


def test_truncated_and_foreign_files_are_model_errors(tmp_path):
    save_checkpoint(tmp_path / "good.pt", plain_checkpoint())
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated or not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a ferkit checkpoint"):
        read_checkpoint(tmp_path / "other.pt")


def test_save_is_atomic_and_stale_temps_are_cleaned(tmp_path):
    save_checkpoint(tmp_path / "last.pt", plain_checkpoint())
    (tmp_path / ".last.pt.abc123.pt").write_bytes(b"half a checkpoint")  # what a kill during torch.save leaves
    assert clean_stale_temps(tmp_path) == [tmp_path / ".last.pt.abc123.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    with pytest.raises(ValueError, match="needs meta"):
        save_checkpoint(tmp_path / "bad.pt", {"model": {}, "arch": "fastnet"})


def test_pack_keeps_float16_weights_and_the_record(tmp_path):
    ckpt = plain_checkpoint() | {"optimizer": {"state": {}}, "rng": {"torch": torch.get_rng_state()}}
    small = pack(ckpt, default_meta("fastnet", name="shipped"))
    assert "optimizer" not in small and "rng" not in small and small["meta"]["name"] == "shipped"
    assert all(v.dtype == torch.float16 for v in small["model"].values() if v.is_floating_point())
    save_checkpoint(tmp_path / "w.pt", small)
    model, meta = load_checkpoint(tmp_path / "w.pt")
    assert meta["name"] == "shipped" and next(model.parameters()).dtype == torch.float32
