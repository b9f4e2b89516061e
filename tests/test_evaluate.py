"""ferkit.evaluate / ferkit.calibration: metrics against hand-computed values, calibration, figures,
the report folder, ensemble weights, and the ``ferkit evaluate`` CLI through subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferkit import evaluate as ev
from ferkit.calibration import MIN_FIT_FACES, fit_unsure_threshold, unsure_summary
from ferkit.cli import main as cli_main
from ferkit.fileio import sha256_of
from ferkit.labels import EMOTIONS, FERPLUS_EMOTIONS

from conftest import TINY_PER_CLASS

ROOT = Path(__file__).resolve().parents[1]

# Five faces, three classes; every number below is worked out by hand in the comments.
TINY_CLASSES = ("a", "b", "c")
TINY_LABELS = np.array([0, 0, 1, 1, 2])
TINY_PROBS = np.array([
    [0.7, 0.2, 0.1],  # a -> a  right, confidence .7
    [0.4, 0.5, 0.1],  # a -> b  wrong, confidence .5
    [0.3, 0.4, 0.3],  # b -> b  right, confidence .4
    [0.1, 0.8, 0.1],  # b -> b  right, confidence .8
    [0.1, 0.3, 0.6],  # c -> c  right, confidence .6
])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``ferkit evaluate ARGS`` in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "ferkit", "evaluate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The same command through ``ferkit.cli.main`` in this process (seconds faster): (exit code, stdout, stderr)."""
    try:
        code = cli_main(["evaluate", *args])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def calibrated_problem(n: int, scale: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): probabilities that are calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, len(EMOTIONS))) * scale
    cumulative = ev.softmax(logits).cumsum(axis=1)
    labels = (cumulative > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


# --- metrics and calibration -----------------------------------------------------------------


def test_classification_metrics_match_hand_computed_values():
    m = ev.classification_metrics(TINY_PROBS, TINY_LABELS, TINY_CLASSES)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["top2_accuracy"] == pytest.approx(1.0)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    # precision a 1/1, b 2/3, c 1/1; recall a 1/2, b 2/2, c 1/1
    expected = {"a": (1.0, 0.5, 2 / 3, 2), "b": (2 / 3, 1.0, 0.8, 2), "c": (1.0, 1.0, 1.0, 1)}
    for name, (p, r, f1, support) in expected.items():
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f1))
        assert row["support"] == support
    assert m["macro"]["f1"] == pytest.approx((2 / 3 + 0.8 + 1.0) / 3)
    assert m["weighted"]["f1"] == pytest.approx((2 * 2 / 3 + 2 * 0.8 + 1.0) / 5)
    # b vs rest: positives score .4 and .8, negatives .2 .5 .3 -> 5 of 6 pairs ordered right
    assert m["per_class"]["b"]["roc_auc"] == pytest.approx(5 / 6)
    assert m["per_class"]["a"]["roc_auc"] == m["per_class"]["c"]["roc_auc"] == pytest.approx(1.0)
    assert m["macro"]["roc_auc"] == pytest.approx((1 + 5 / 6 + 1) / 3)
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.7, 0.4, 0.4, 0.8, 0.6])))
    # each face sits alone in its bin: ECE = mean |correct - confidence| = (.3 + .5 + .6 + .2 + .4) / 5
    assert m["ece"] == pytest.approx(0.4)


def test_auc_is_none_for_a_class_absent_from_the_split():
    m = ev.classification_metrics(TINY_PROBS[:4], TINY_LABELS[:4], TINY_CLASSES)
    assert m["per_class"]["c"]["roc_auc"] is None and m["per_class"]["c"]["support"] == 0
    # macro over the classes present: a 1, b (.4 .8 vs .2 .5 -> 3 of 4 pairs) 3/4
    assert m["macro"]["roc_auc"] == pytest.approx((1 + 3 / 4) / 2)
    json.dumps(m)  # None, not NaN: the metrics stay valid JSON


def test_ece_of_calibrated_probabilities_is_near_zero():
    logits, labels = calibrated_problem(100_000, 1.5, seed=0)
    assert ev.expected_calibration_error(ev.softmax(logits), labels) < 0.01


def test_temperature_scaling_fixes_overconfident_logits():
    logits, labels = calibrated_problem(20_000, 1.5, seed=1)
    overconfident = 3.0 * logits
    before = ev.expected_calibration_error(ev.softmax(overconfident), labels)
    temperature = ev.fit_temperature(overconfident, labels)
    after = ev.expected_calibration_error(ev.softmax(overconfident, temperature), labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    assert before > 0.15 and after < 0.02
    assert (ev.softmax(overconfident, temperature).argmax(1) == overconfident.argmax(1)).all()


# --- figures and the report folder -----------------------------------------------------------


def test_figures_are_written_as_real_pngs(tmp_path):
    logits, labels = calibrated_problem(2_000, 1.5, seed=2)
    probs = ev.softmax(logits)
    paths = [
        ev.plot_confusion_matrix(ev.classification_metrics(probs, labels, EMOTIONS)["confusion_matrix"], EMOTIONS,
                                 tmp_path / "cm.png", "test"),
        ev.plot_roc_curves(probs, labels, EMOTIONS, tmp_path / "roc.png", "test"),
        ev.plot_reliability({"before": ev.softmax(3 * logits), "after": probs}, labels, tmp_path / "rel.png"),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300
            assert np.asarray(image.convert("L")).std() > 10  # drawn on, not a blank canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "rel.png", "roc.png"]  # no temp files left


def test_evaluation_report_writes_metrics_markdown_and_figures(tmp_path):
    logits, labels = calibrated_problem(3_000, 1.5, seed=3)
    logits = 2.5 * logits  # overconfident, so calibration has something to fix
    sha = "ab" * 32
    metrics = ev.evaluation_report(
        None, labels[:2000], EMOTIONS, tmp_path, title="synthetic on PrivateTest", logits=logits[:2000],
        calibration_logits=logits[2000:], calibration_labels=labels[2000:],
        extra={"model": "synthetic", "model_sha256": sha, "split": "PrivateTest", "tta": "flip",
               "command": "ferkit evaluate synthetic"})
    saved = json.loads((tmp_path / ev.METRICS_FILE).read_text())
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"])
    assert saved["run"]["model_sha256"] == sha and saved["run"]["date"]
    calibration = saved["calibration"]
    assert calibration["temperature"] > 1.5 and calibration["ece_after"] < calibration["ece_before"]
    assert saved["ece"] == pytest.approx(calibration["ece_after"])  # the metrics use the calibrated probabilities
    report = (tmp_path / ev.REPORT_FILE).read_text()
    assert f"{metrics['accuracy']:.4f}" in report and sha in report and "ferkit evaluate synthetic" in report
    assert "fitted on PublicTest" in report
    for png in (ev.CONFUSION_PNG, ev.ROC_PNG, ev.RELIABILITY_PNG):
        assert f"]({png})" in report and (tmp_path / png).stat().st_size > 10_000


# --- ensembles -------------------------------------------------------------------------------


def test_ensemble_weights_ignore_a_noise_model():
    logits, labels = calibrated_problem(5_000, 2.0, seed=4)
    noise = ev.softmax(np.random.default_rng(5).normal(size=logits.shape) * 2.0)
    weights = ev.choose_ensemble_weights([noise, ev.softmax(logits)], labels)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[0] == 0.0 and weights[1] == 1.0


def test_ensemble_weights_share_between_two_useful_models_deterministically():
    rng = np.random.default_rng(6)
    truth, labels = calibrated_problem(5_000, 2.0, seed=7)
    members = [ev.softmax(truth + rng.normal(size=truth.shape)) for _ in range(2)]  # two independent views
    weights = ev.choose_ensemble_weights(members, labels, step=0.1)
    assert np.allclose(weights * 10, np.round(weights * 10))  # multiples of the step
    assert weights.min() >= 0.3
    assert np.array_equal(weights, ev.choose_ensemble_weights(members, labels, step=0.1))
    ensemble_nll = ev.negative_log_likelihood(ev.ensemble_probs(members, weights), labels)
    assert ensemble_nll < min(ev.negative_log_likelihood(p, labels) for p in members)



def test_ensemble_weights_keep_the_picked_models_within_a_size_budget():
    rng = np.random.default_rng(8)
    truth, labels = calibrated_problem(5_000, 2.0, seed=9)
    members = [ev.softmax(truth + rng.normal(size=truth.shape) * s) for s in (0.5, 0.6, 1.5)]
    free = ev.choose_ensemble_weights(members, labels, step=0.25)
    assert free[0] > 0 and free[1] > 0  # unbounded, the two good big models are both picked
    capped = ev.choose_ensemble_weights(members, labels, step=0.25, sizes=[5, 5, 1], budget=6)
    assert capped.sum() == pytest.approx(1.0)
    assert capped[0] > 0 and capped[1] == 0  # one big model and the small one fit, the second big one does not
    with pytest.raises(ValueError, match="over the budget"):
        ev.choose_ensemble_weights(members, labels, sizes=[5, 5, 5], budget=4)

# --- logits files and the CLI ----------------------------------------------------------------


def write_synthetic_logits(path: Path, seed: int, *, labels_seed: int = 8, noise: float = 1.0) -> Path:
    """A logits file as ``ferkit train`` writes it, for a model that is decent but overconfident."""
    truth, labels = calibrated_problem(1_200, 2.0, seed=labels_seed)
    logits = 2.0 * (truth + np.random.default_rng(seed).normal(size=truth.shape) * noise)
    return ev.write_logits_npz(path, EMOTIONS, {"PublicTest": (logits[:600], labels[:600]),
                                                "PrivateTest": (logits[600:], labels[600:])},
                               model="synthetic", model_sha256="cd" * 32, tta="none")


TORCH_BLOCKED = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch is not installed")
sys.meta_path.insert(0, NoTorch())
import numpy as np
from ferkit import evaluate as ev
from ferkit.cli import main as cli_main
from ferkit.labels import EMOTIONS
logits = np.random.default_rng(0).normal(size=(50, 7)); labels = np.arange(50) % 7
ev.classification_metrics(ev.softmax(logits, ev.fit_temperature(logits, labels)), labels, EMOTIONS)
assert "torch" not in sys.modules
"""


def test_evaluate_module_works_without_torch():
    result = subprocess.run([sys.executable, "-c", TORCH_BLOCKED], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cli_reports_a_logits_file(tmp_path, capsys):
    npz = write_synthetic_logits(tmp_path / "logits.npz", seed=9)
    out = tmp_path / "report"
    code, stdout, stderr = cli(capsys, "--probs", str(npz), "--split", "PrivateTest", "--out", str(out))
    assert code == 0, stderr
    metrics = json.loads((out / ev.METRICS_FILE).read_text())
    assert metrics["n"] == 600 and metrics["run"]["split"] == "PrivateTest"
    assert metrics["run"]["command"] == f"ferkit evaluate --probs {npz} --split PrivateTest --out {out}"
    assert metrics["run"]["model_sha256"] == "cd" * 32
    assert metrics["calibration"]["fitted_on"] == "PublicTest" and metrics["calibration"]["temperature"] > 1.2
    assert f"accuracy  {metrics['accuracy']:.4f}" in stdout and "ECE" in stdout


def test_cli_reads_per_tta_logits_as_ferkit_train_saves_them(tmp_path, capsys):
    truth, labels = calibrated_problem(400, 2.0, seed=13)
    arrays = {"classes": np.array(EMOTIONS)}
    for split, rows in (("PublicTest", slice(0, 200)), ("PrivateTest", slice(200, 400))):
        arrays[f"{split}_labels"] = labels[rows]
        arrays[f"{split}_logits_none"] = truth[rows].astype(np.float32)
        arrays[f"{split}_logits_flip"] = -truth[rows].astype(np.float32)  # a different answer per mode
    np.savez_compressed(tmp_path / "logits.npz", **arrays)
    for tta in ("none", "flip"):
        code, _, stderr = cli(capsys, "--probs", str(tmp_path / "logits.npz"), "--tta", tta,
                              "--out", str(tmp_path / tta))
        assert code == 0, stderr
    runs = {tta: json.loads((tmp_path / tta / ev.METRICS_FILE).read_text()) for tta in ("none", "flip")}
    assert runs["flip"]["run"]["tta"] == "flip" and runs["none"]["run"]["model_sha256"] == "not recorded"
    assert runs["none"]["accuracy"] > 0.4 > runs["flip"]["accuracy"]


def test_cli_ensemble_of_logits_files_chooses_weights_on_publictest(tmp_path, capsys):
    files = [str(write_synthetic_logits(tmp_path / f"m{i}.npz", seed=10 + i)) for i in range(2)]
    out = tmp_path / "ensemble"
    code, _, stderr = cli(capsys, "--probs", *files, "--out", str(out), "--limit", "500")
    assert code == 0, stderr
    run = json.loads((out / ev.METRICS_FILE).read_text())["run"]
    assert run["ensemble"]["weights_chosen_on"] == "PublicTest" and run["n"] == 500
    assert sum(m["weight"] for m in run["ensemble"]["members"]) == pytest.approx(1.0)


def test_cli_refuses_to_calibrate_on_the_evaluated_split(tmp_path, capsys):
    npz = write_synthetic_logits(tmp_path / "logits.npz", seed=12)
    code, _, stderr = cli(capsys, "--probs", str(npz), "--split", "PrivateTest", "--calibrate-on", "PrivateTest")
    assert code == 2 and "would fit on the split being reported" in stderr


def test_cli_logits_file_without_the_split_is_a_one_line_error(tmp_path, capsys):
    npz = ev.write_logits_npz(tmp_path / "pub.npz", EMOTIONS, {"PublicTest": (np.zeros((3, 7)), np.zeros(3))})
    code, _, stderr = cli(capsys, "--probs", str(npz))
    assert code == 1
    assert stderr.startswith("ferkit: error: ") and stderr.count("\n") == 1 and "lacks PrivateTest_logits" in stderr
    (tmp_path / "junk.npz").write_text("not an archive")
    code, _, stderr = cli(capsys, "--probs", str(tmp_path / "junk.npz"))
    assert code == 1 and stderr.count("\n") == 1 and "is not a logits file" in stderr


def test_cli_missing_model_is_a_one_line_error(tmp_path):
    result = run_cli(str(tmp_path / "nope.onnx"), "--split", "PublicTest")
    assert result.returncode == 1
    assert result.stderr.startswith("ferkit: error: ") and result.stderr.count("\n") == 1
    assert "nope.onnx" in result.stderr and "Traceback" not in result.stderr


def export_random_fastnet(path: Path, classes: tuple[str, ...], seed: int) -> Path:
    """A randomly initialised fastnet exported to ONNX with the ferkit metadata of docs/design.md."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from ferkit.models import create_model

    torch.manual_seed(seed)
    model = create_model("fastnet", num_classes=len(classes)).eval()
    torch.onnx.export(model, torch.zeros(1, 1, 48, 48), path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    meta = {"name": path.stem, "arch": "fastnet", "classes": list(classes), "input_size": 48, "channels": 1,
            "mean": 0.5, "std": 0.25, "preprocess": "none", "temperature": 1.0, "unsure_threshold": 0.4,
            "face_margin": 0.2}
    proto = onnx.load(path)
    proto.metadata_props.append(onnx.StringStringEntryProto(key="ferkit", value=json.dumps(meta)))
    onnx.save(proto, path)
    return path


@pytest.fixture(scope="module")
def random_models(tmp_path_factory) -> dict[str, Path]:
    """Two 7-class FER2013 models and one 8-class FER+ model, random weights."""
    root = tmp_path_factory.mktemp("models")
    return {"a": export_random_fastnet(root / "fastnet-a.onnx", EMOTIONS, 0),
            "b": export_random_fastnet(root / "fastnet-b.onnx", EMOTIONS, 1),
            "ferplus": export_random_fastnet(root / "fastnet-ferplus.onnx", FERPLUS_EMOTIONS, 2)}


def test_cli_evaluates_an_onnx_model_on_publictest(tmp_path, random_models, fer_data):
    out = tmp_path / "eval"
    result = run_cli(str(random_models["a"]), "--split", "PublicTest", "--limit", "64", "--tta", "flip",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / ev.METRICS_FILE).read_text())
    run = metrics["run"]
    assert metrics["n"] == 64 and run["tta"] == "flip" and run["split"] == "PublicTest"
    assert run["model"] == "fastnet-a"
    assert run["model_sha256"] == sha256_of(random_models["a"]) and run["dataset"] == "FER2013"
    assert metrics["calibration"]["fitted_on"] == "PublicTest"
    report = (out / ev.REPORT_FILE).read_text()
    assert run["model_sha256"] in report and "the evaluated split itself" in report
    assert all((out / png).stat().st_size > 0 for png in (ev.CONFUSION_PNG, ev.ROC_PNG, ev.RELIABILITY_PNG))


def test_cli_ensemble_of_onnx_models_and_ferplus_auto(tmp_path, random_models, tiny_fer_dir, monkeypatch, capsys):
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "cache"))
    code, _, stderr = cli(capsys, "--ensemble", str(random_models["a"]), str(random_models["b"]),
                          "--data", str(tiny_fer_dir), "--out", str(tmp_path / "ens"))
    assert code == 0, stderr
    run = json.loads((tmp_path / "ens" / ev.METRICS_FILE).read_text())["run"]
    assert [m["model"] for m in run["ensemble"]["members"]] == ["fastnet-a", "fastnet-b"]
    assert run["n"] == TINY_PER_CLASS * len(EMOTIONS)

    code, _, stderr = cli(capsys, str(random_models["ferplus"]), "--data", str(tiny_fer_dir),
                          "--out", str(tmp_path / "fp"))
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "fp" / ev.METRICS_FILE).read_text())
    assert metrics["classes"] == list(FERPLUS_EMOTIONS) and metrics["run"]["dataset"] == "FER+"

    code, _, stderr = cli(capsys, str(random_models["a"]), "--ferplus", "--data", str(tiny_fer_dir))
    assert code == 1 and "do not match the FER+ labels" in stderr


# --- the unsure threshold -----------------------------------------------------------------------


def calibrated_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose top probability c is right with probability c: perfectly calibrated, 3 classes."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.34, 1.0, n)
    probs = np.stack([top, (1 - top) * 0.6, (1 - top) * 0.4], axis=1)
    right = rng.uniform(size=n) < top
    labels = np.where(right, 0, 1)
    return probs, labels


def test_unsure_threshold_marks_the_faces_that_are_more_often_wrong():
    probs, labels = calibrated_faces(20000)
    threshold = fit_unsure_threshold(probs, labels)
    assert 0.45 <= threshold <= 0.55  # calibrated: right half the time at 0.5
    summary = unsure_summary(probs, labels, threshold)
    assert summary["accuracy_sure"] > 0.7 > 0.5 > summary["accuracy_unsure"]
    assert summary["n_sure"] + summary["n_unsure"] == 20000
    assert fit_unsure_threshold(probs[:MIN_FIT_FACES - 1], labels[:MIN_FIT_FACES - 1]) is None


def test_a_model_report_states_its_sure_and_unsure_answers(tmp_path):
    probs, labels = calibrated_faces(500)
    logits = np.log(probs)
    metrics = ev.evaluation_report(None, labels, ("a", "b", "c"), tmp_path, title="t", logits=logits,
                                unsure_threshold=0.5)
    assert metrics["unsure"]["threshold"] == 0.5 and 0 < metrics["unsure"]["coverage"] < 1
    assert "## Sure and unsure answers" in (tmp_path / "report.md").read_text()


def test_a_given_temperature_is_used_and_said(tmp_path):
    probs, labels = calibrated_faces(60)
    metrics = ev.evaluation_report(None, labels, ("a", "b", "c"), tmp_path, title="t", logits=np.log(probs),
                                calibration_logits=np.log(probs), calibration_labels=labels,
                                temperature=1.5, temperature_note="kept from the parent")
    assert metrics["calibration"]["temperature"] == 1.5 and not metrics["calibration"]["temperature_fitted"]
    assert "the model's own, not fitted here: kept from the parent" in (tmp_path / "report.md").read_text()


def test_evaluate_on_a_users_labelled_folder(tmp_path, photos_dir):
    """`ferkit evaluate MODEL --data-folder DIR`: a user's folders, any subset of the model's classes."""
    import shutil

    for name, files in {"happy": ["single_happy_astronaut.jpg", "group4_family.jpg"],
                        "sad": ["single_sad_baby.jpg"]}.items():
        (tmp_path / "mine" / name).mkdir(parents=True)
        for f in files:
            shutil.copy(photos_dir / f, tmp_path / "mine" / name / f)
    out = tmp_path / "report"
    assert cli_main(["evaluate", "default", "--data-folder", str(tmp_path / "mine"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["run"]["split"] == "folder" and "calibration" not in metrics
    assert metrics["per_class"]["happy"]["support"] == 2 and metrics["per_class"]["angry"]["support"] == 0
    (tmp_path / "mine" / "bored").mkdir()
    shutil.copy(photos_dir / "single_neutral_woman.jpg", tmp_path / "mine" / "bored")
    with pytest.raises(ev.DataError, match="class folders the model does not predict: bored"):
        ev.main(["default", "--data-folder", str(tmp_path / "mine"), "--out", str(out)])
