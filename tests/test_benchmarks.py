"""The benchmarks: the inference benchmark end to end with a few repetitions, and how the accuracy benchmark
chooses each tier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_bench_infer_times_an_ensemble_as_its_members_merged():
    """A merged graph's PyTorch twin is its members' architectures in one EnsembleNet; its cost is stated."""
    pytest.importorskip("torch")
    from benchmarks import bench_infer
    from ferkit.meta import check_meta, default_meta
    from ferkit.models import count_params, create_model

    members = [{"source": "a", "name": "a", "arch": "fastnet", "weight": 0.5, "temperature": 1.0},
               {"source": "b", "name": "b", "arch": "seed_cnn", "weight": 0.5, "temperature": 2.0}]
    meta = check_meta({**default_meta("ensemble"), "members": members, "graph_tta": "flip"}, "best")
    model = bench_infer.torch_model(meta)
    assert count_params(model) == count_params(create_model("fastnet")) + count_params(create_model("seed_cnn"))
    assert model.flip and bench_infer.torch_model(default_meta("fastnet")).__class__.__name__ != "EnsembleNet"
    timed = {"label": "best (ensemble)", "name": "best", "members": 2, "graph_tta": "flip",
             "latency": {"onnxruntime": {"median_ms": 4.0}}, "end_to_end": {"yunet": {"median_ms": 9.0}}}
    reference = {"latency": {"onnxruntime": {"median_ms": 0.5}}}
    assert bench_infer.targets_line(timed, reference) == (
        "Cost of best (ensemble): one face 4.000 ms (2 members, in-graph TTA flip) = 8.00x fastnet's; "
        "photo end to end with yunet 9.0 ms.")


def fake_run(arch: str, n_classes: int, right: dict[str, float], seed: int) -> dict:
    """Saved logits of a run that is right on the given share of each split's faces (single view and flip)."""
    rng = np.random.default_rng(seed)
    run = {"arch": arch, "classes": np.array([f"c{i}" for i in range(n_classes)])}
    for split, share in right.items():
        labels = rng.integers(0, n_classes, 400)
        logits = rng.normal(size=(400, n_classes))
        hits = rng.random(400) < share
        logits[np.arange(400)[hits], labels[hits]] += 10
        run[f"{split}_labels"] = labels
        run[f"{split}_logits_none"] = run[f"{split}_logits_flip"] = logits
    return run


def test_tier_choices_pick_on_publictest_and_let_resnet18_in_only_as_int8():
    from benchmarks.bench_accuracy import TIERS, Ladder, run_table, tier_choices

    runs = {"fpg1_resnet": fake_run("resnet18", 8, {"PublicTest": 0.9, "PrivateTest": 0.6}, 0),
            "fpg1_vgg": fake_run("vgg", 8, {"PublicTest": 0.8, "PrivateTest": 0.9}, 1),
            "fpg2_mobile": fake_run("mobile", 8, {"PublicTest": 0.7, "PrivateTest": 0.7}, 2),
            "g1_vgg": fake_run("vgg", 7, {"PublicTest": 0.95, "PrivateTest": 0.95}, 3)}  # another dataset
    choices = tier_choices(runs, run_table(runs), Ladder(8, "fpg", dict.fromkeys(TIERS, ("fpg",)), 2))
    assert choices["best_single_view"]["run"] == "fpg1_resnet"  # chosen on PublicTest, not on PrivateTest
    assert choices["best_default_single_view"]["run"] == "fpg1_vgg"  # fp32 ResNet-18 is over the bound
    assert choices["best_default_single_view_int8"]["run"] == "fpg1_resnet"
    assert choices["best_fast_single_view"]["run"] == "fpg2_mobile"
    assert set(choices["best_tier"]["members"]) <= {"fpg1_resnet", "fpg1_vgg"}  # VGG and ResNet-18 of this ladder



def test_best_tier_keeps_its_members_within_the_size_cap(monkeypatch):
    """Three vgg_deep runs (7.8 M parameters each), noisy views of the same faces: the 20 M cap lets two into
    `best`, never three; without it greedy selection takes all three."""
    pytest.importorskip("torch")
    from benchmarks import bench_accuracy

    rng = np.random.default_rng(10)
    labels = {split: rng.integers(0, 8, 2000) for split in ("PublicTest", "PrivateTest")}
    truth = {split: np.eye(8)[y] * 2.0 for split, y in labels.items()}
    runs = {}
    for i in range(3):
        runs[f"fpg1_vgg_deep_{i}"] = {"arch": "vgg_deep", "classes": np.array([f"c{k}" for k in range(8)])}
        for split in labels:
            runs[f"fpg1_vgg_deep_{i}"] |= {f"{split}_labels": labels[split],
                                           f"{split}_logits_flip": truth[split] + rng.normal(size=(2000, 8))}
    capped = bench_accuracy.capped_ensemble(runs, 8, "fpg", bench_accuracy.BEST_ARCHS, "flip", 3)
    assert len(capped["members"]) == 2 and capped["params"] <= bench_accuracy.BEST_MAX_PARAMS
    monkeypatch.setattr(bench_accuracy, "BEST_MAX_PARAMS", 10**9)
    assert len(bench_accuracy.capped_ensemble(runs, 8, "fpg", bench_accuracy.BEST_ARCHS, "flip", 3)["members"]) == 3

def shared_label_runs(specs: dict[str, tuple[str, dict[str, list[int]]]]) -> dict:
    """Runs on the same 4 faces per split (labels 0-3): each right on the faces listed, confidently wrong elsewhere."""
    runs = {}
    for name, (arch, right) in specs.items():
        run = {"arch": arch, "classes": np.array([f"c{i}" for i in range(4)])}
        for split, faces in right.items():
            labels = np.arange(4)
            logits = np.zeros((4, 4))
            logits[np.arange(4), (labels + 1) % 4] = 1.0  # wrong, mildly
            logits[faces, labels[faces]] = 3.0              # right, confidently
            run[f"{split}_labels"], run[f"{split}_logits_none"] = labels, logits
        runs[name] = run
    return runs


def test_default_tier_takes_a_pair_only_where_it_beats_every_single_run_on_publictest():
    from benchmarks.bench_accuracy import default_tier

    pair_wins = shared_label_runs({
        "g1_a": ("vgg", {"PublicTest": [0, 1], "PrivateTest": [0]}),
        "g1_b": ("vgg", {"PublicTest": [2, 3], "PrivateTest": [1]}),
        "g1_c": ("vgg", {"PublicTest": [0, 1, 2], "PrivateTest": [0, 1, 2, 3]}),
        "g1_fast": ("mobile", {"PublicTest": [], "PrivateTest": []})})
    chosen = default_tier(pair_wins, 4)  # a + b and b + c are right on every PublicTest face, c alone on 3 of 4
    assert (chosen["members"], chosen["PublicTest"], chosen["PrivateTest"]) == (["g1_a", "g1_b"], 1.0, 0.5)

    single_wins = shared_label_runs({
        "g1_a": ("vgg", {"PublicTest": [0, 1, 2, 3], "PrivateTest": [0]}),
        "g1_b": ("vgg", {"PublicTest": [0, 1, 2, 3], "PrivateTest": [0, 1, 2, 3]})})
    assert default_tier(single_wins, 4)["members"] == ["g1_a"]  # a tie: fewer members, then name order

    two_resnets = shared_label_runs({
        "g1_r": ("resnet18", {"PublicTest": [0, 1], "PrivateTest": []}),
        "g1_s": ("resnet18", {"PublicTest": [2, 3], "PrivateTest": []})})
    assert len(default_tier(two_resnets, 4)["members"]) == 1  # over the default's cost bound as a pair

    deep_and_vgg = shared_label_runs({
        "fpg3_d": ("vgg_deep", {"PublicTest": [0, 1], "PrivateTest": []}),
        "fpg3_v": ("vgg", {"PublicTest": [2, 3], "PrivateTest": []}),
        "fpg3_e": ("vgg_deep", {"PublicTest": [2, 3], "PrivateTest": []})})
    assert default_tier(deep_and_vgg, 4)["members"] == ["fpg3_d", "fpg3_v"]  # a VGG-deep fits beside a VGG only
