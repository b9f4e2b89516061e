"""scripts/gpu/pack_runs.py: what a GPU call sends back fits the device tool's limits, best runs' weights first."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from ferkit.checkpoint import read_checkpoint
from test_merge import write_member

ROOT = Path(__file__).resolve().parents[1]


def pack_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pack_runs", ROOT / "scripts" / "gpu" / "pack_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def runs(tmp_path) -> Path:
    """Three finished runs (best.pt, logits.npz, summary.json, a log beside) and a teacher file, as a call ends."""
    root = tmp_path / "runs"
    for i, (name, acc) in enumerate([("r_low", 0.70), ("r_high", 0.90), ("r_mid", 0.80)]):
        write_member(root / name / "best.pt", "fastnet", i, 1.0)
        (root / name / "logits.npz").write_bytes(b"logits")
        (root / name / "summary.json").write_text(json.dumps({"PublicTest_acc_none": acc}))
        (root / f"{name}.log").write_text("log")
    (root / "teacher.npz").write_bytes(b"teacher")
    return root


def test_logs_hold_all_but_checkpoints_and_weights_come_best_first(runs, tmp_path):
    pack = pack_script()
    out = tmp_path / "out"
    out.mkdir()
    assert pack.main([str(runs), str(out)]) == 0
    with tarfile.open(out / "logs.tgz") as tar:
        names = set(tar.getnames())
    assert {"./r_high/logits.npz", "./r_high/summary.json", "./r_low.log", "./teacher.npz"} <= names
    assert not any(n.endswith(".pt") for n in names)
    assert sorted(p.name for p in out.iterdir()) == ["logs.tgz", "r_high.tgz", "r_low.tgz", "r_mid.tgz"]
    with tarfile.open(out / "r_high.tgz") as tar:
        assert tar.getnames() == ["r_high/weights.pt"]
    packed = read_checkpoint(runs / "r_high" / "weights.pt")
    assert {str(t.dtype) for t in packed["model"].values() if t.is_floating_point()} == {"torch.float16"}


def test_weights_over_the_limits_are_left_out_lowest_publictest_first(runs, tmp_path, monkeypatch, capsys):
    pack = pack_script()
    folders = pack.pack_weights(runs)
    one = len(pack.write_weights([folders[0]], tmp_path)[0][0].read_bytes())  # one run's archive, about
    out = tmp_path / "out"
    out.mkdir()
    (out / "teacher.npz").write_bytes(b"t")  # files already in $OUT count against the limits
    monkeypatch.setattr(pack, "MARGIN", 0)
    monkeypatch.setattr(pack, "MAX_TOTAL_BYTES", int(2.5 * one))
    written, left_out = pack.write_weights(folders, out)
    assert [p.name for p in written] == ["r_high.tgz", "r_mid.tgz"] and [r.name for r in left_out] == ["r_low"]
    assert not (out / "r_low.tgz").exists()

    monkeypatch.setattr(pack, "MAX_TOTAL_BYTES", 64 * pack.MIB)
    monkeypatch.setattr(pack, "MAX_FILES", 2)
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    (crowded / "teacher.npz").write_bytes(b"t")
    written, left_out = pack.write_weights(folders, crowded)
    assert [p.name for p in written] == ["r_high.tgz"] and len(left_out) == 2


def test_a_run_without_summary_goes_last():
    pack = pack_script()
    assert pack.publictest_accuracy(Path("/nonexistent/run")) == -1.0
