"""Smoke test of the inference benchmark: the script runs end to end with a few repetitions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent


def test_bench_infer_quick(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "infer.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_infer", "--quick", "--model", "default",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert {"cpu", "usable_cpus", "onnxruntime", "torch"} <= set(report["machine"])
    [model] = report["models"]
    assert model["label"] == f"default ({model['arch']})" and model["note"] == "shipped weights"
    latency = model["latency"]
    for engine in ("onnxruntime", "pytorch", "predict_faces"):
        assert 0 < latency[engine]["median_ms"] <= latency[engine]["p90_ms"]
    assert set(model["throughput"]) == {"64", "256"}
    assert all(v["onnxruntime_faces_per_s"] > 0 and v["pytorch_faces_per_s"] > 0 for v in model["throughput"].values())
    assert set(model["end_to_end"]) == {"yunet", "haar"}
    assert model["end_to_end"]["yunet"]["faces_found"] == 1
    assert "| model | parameters | ONNX Runtime |" in done.stdout and "Targets for" in done.stdout
    assert report["markdown"] in done.stdout
