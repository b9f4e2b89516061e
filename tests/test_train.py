"""``ferkit train``: a smoke run, resuming after a kill, DDP on two CPU ranks, fine-tuning on a photo folder
through export and ``ferkit.load``, and the helpers the loop is made of."""

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.special import log_softmax

import ferkit
import ferkit.checkpoint
from ferkit.calibration import fit_temperature
from ferkit.data import FaceSet, load_split
from ferkit.errors import DataError, FerkitError, ModelError
from ferkit.evaluate import evaluation_report, read_logits_npz
from ferkit.checkpoint import load_checkpoint, resolve_checkpoint
from ferkit.meta import default_meta
from ferkit.userdata import load_face_folder
from ferkit.fileio import sha256_of
from ferkit.labels import EMOTIONS
from ferkit.models import create_model
from ferkit.settings import WEIGHTS_DIR
from ferkit.checkpoint import read_checkpoint
from ferkit.ensemble import read_ensemble_file, write_ensemble_file
from ferkit.train import (Runtime, TrainConfig, aux_loss, class_weights, fit_epochs_to_time_limit, get_args_parser,
                          planning_epoch_seconds,
                          load_data, one_hot, read_teacher_probs, replace_head, resolve_settings, run_meta,
                          stratified_split, target_blocks)

ROOT = Path(__file__).resolve().parents[1]
SUBSET = 256  # faces of Training and of PublicTest in the smoke run
SMALL_SUBSET = 128  # in the runs that start two processes
RUN_OUTPUTS = ("best.pt", "last.pt", "log.csv", "log.json", "curves.png", "logits.npz", "args.json", "summary.json",
               "report/metrics.json", "report/report.md", "report/confusion_matrix.png")
FOLDER_CLASSES = ("happy", "sad", "neutral")  # canonical order, whatever order the folders are listed in
FER_FACES_PER_CLASS = 6


def run(cmd: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ferkit", "train", *args]


def log_rows(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


# --- whole runs through the command line ------------------------------------------------------


def test_smoke_run_writes_every_output(tmp_path, fer_data):
    out = tmp_path / "seed"
    proc = run(train_cmd("--arch", "seed_cnn", "--recipe", "seed", "--epochs", "1", "--subset", str(SUBSET),
                         "--report-splits", "PublicTest", "--out", str(out)))
    assert proc.returncode == 0, proc.stderr
    assert all((out / name).is_file() for name in RUN_OUTPUTS), sorted(p.name for p in out.rglob("*"))
    [row] = log_rows(out)
    assert row["epoch"] == "1" and np.isfinite(float(row["train_loss"])) and 0 <= float(row["val_acc"]) <= 1
    assert json.loads((out / "log.json").read_text())[0]["epoch"] == 1
    args = json.loads((out / "args.json").read_text())
    settings = (args["arch"], args["recipe"], args["opt"], args["batch_size"], args["epochs"])
    assert settings == ("seed_cnn", "seed", "adam", 64, 1)

    _, meta = load_checkpoint(out / "best.pt")
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert meta["classes"] == list(EMOTIONS) and meta["arch"] == "seed_cnn" and meta["face_margin"] == 0.0
    assert metrics["n"] == SUBSET and metrics["calibration"]["fitted_on"] == "PublicTest"
    logits = read_logits_npz(out / "logits.npz", ["PublicTest"], tta="crops")
    assert logits.logits["PublicTest"].shape == (SUBSET, 7)
    single_view = read_logits_npz(out / "logits.npz", ["PublicTest"], tta="none")
    # the stored T is fitted on PublicTest without TTA, the way the Recognizer predicts by default
    assert meta["temperature"] == pytest.approx(
        fit_temperature(single_view.logits["PublicTest"], single_view.labels["PublicTest"]))
    assert np.array_equal(logits.labels["PublicTest"], load_split("PublicTest").labels[:SUBSET])


def test_resume_after_a_kill_loses_at_most_one_epoch(tmp_path, fer_data):
    out = tmp_path / "run"
    cmd = train_cmd("--arch", "fastnet", "--epochs", "3", "--subset", str(SMALL_SUBSET),
                    "--report-splits", "PublicTest", "--out", str(out))
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            for line in proc.stdout:
                if line.startswith("epoch=1 "):
                    proc.send_signal(signal.SIGKILL)
                    break
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()
    done = len(log_rows(out))
    assert done in (1, 2)

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out / 'last.pt'} at epoch {done + 1}" in resumed.stdout
    assert "epoch=1 " not in resumed.stdout
    assert [r["epoch"] for r in log_rows(out)] == ["1", "2", "3"]
    assert json.loads((out / "args.json").read_text())["epochs"] == 3


def test_ddp_on_two_cpu_ranks(tmp_path, fer_data):
    out = tmp_path / "ddp"
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "ferkit.train", "--arch", "fastnet", "--epochs", "1", "--subset", str(SMALL_SUBSET),
                "--report-splits", "PublicTest", "--device", "cpu", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 x cpu" in proc.stdout and proc.stdout.count("epoch=1 ") == 1  # only rank 0 speaks and writes
    [row] = log_rows(out)
    # The logged validation loss is over all 128 faces (each rank scores half, the sums are reduced): it equals
    # the NLL of the best epoch's flip-TTA logits that rank 0 computes alone at the end.
    with np.load(out / "logits.npz") as z:
        logits, labels = z["PublicTest_logits_flip"], z["PublicTest_labels"]
    nll = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels].mean()
    assert len(labels) == SMALL_SUBSET and float(row["val_loss"]) == pytest.approx(nll, abs=1e-3)
    assert float(row["val_acc"]) == pytest.approx((logits.argmax(1) == labels).mean(), abs=1.5 / SMALL_SUBSET)


# --- fine-tuning on a user's folder -----------------------------------------------------------


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, photos_dir, fer_data) -> Path:
    """happy/, sad/, neutral/ with real photos (detected and cropped), FER faces as 48x48 PNG, and two bad files."""
    root = tmp_path_factory.mktemp("mine")
    photos = {"happy": ["single_happy_astronaut.jpg", "group4_family.jpg"],
              "neutral": ["single_neutral_hopper.jpg", "single_neutral_woman.jpg"],
              "sad": ["single_sad_baby.jpg"]}
    public = load_split("PublicTest")
    for name, files in photos.items():
        (root / name).mkdir()
        for file in files:
            shutil.copy(photos_dir / file, root / name / file)
        for i in np.flatnonzero(public.labels == EMOTIONS.index(name))[:FER_FACES_PER_CLASS]:
            cv2.imwrite(str(root / name / f"fer{public.rows[i]}.png"), public.images[i])
    baby = cv2.imread(str(photos_dir / "single_sad_baby.jpg"))
    cv2.imwrite(str(root / "sad" / "baby_flipped.jpg"), cv2.flip(baby, 1))
    shutil.copy(photos_dir / "noface_coffee.jpg", root / "sad" / "coffee.jpg")
    (root / "neutral" / "broken.jpg").write_text("not a picture")
    return root


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> str:
    """The checkpoint to fine-tune: the bundled default when it is there, else a random fastnet."""
    if (WEIGHTS_DIR / "default.pt").is_file():
        return "default"
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("parent") / "random.pt"
    torch.save({"model": create_model("fastnet").state_dict(), "arch": "fastnet", "model_kwargs": {},
                "meta": default_meta("fastnet", unsure_threshold=0.4)}, path)
    return str(path)


def test_finetune_on_a_photo_folder_exports_a_model_with_its_classes(photo_folder, parent, tmp_path):
    out = tmp_path / "mine"
    proc = run(train_cmd("--from", parent, "--data-folder", str(photo_folder), "--epochs", "1", "--out", str(out)))
    assert proc.returncode == 0, proc.stderr
    assert "coffee.jpg: no face found" in proc.stderr and "Traceback" not in proc.stderr
    assert all((out / name).is_file() for name in RUN_OUTPUTS)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    held_out = metrics["n"]
    assert metrics["classes"] == list(FOLDER_CLASSES) and held_out == 6  # 20 % of 8 faces per class
    assert metrics["calibration"]["fitted_on"] == "validation"
    args = json.loads((out / "args.json").read_text())
    assert args["recipe"] == "finetune" and args["arch"] == load_checkpoint(parent)[1]["arch"]

    onnx_path = tmp_path / "mine.onnx"
    proc = run([sys.executable, "-m", "ferkit", "export", str(out / "best.pt"), "--out", str(onnx_path),
                "--verify-split", "none"])
    assert proc.returncode == 0, proc.stderr
    recognizer = ferkit.load(onnx_path)
    assert recognizer.classes == FOLDER_CLASSES and recognizer.name == "mine"
    assert recognizer.meta["temperature"] == load_checkpoint(out / "best.pt")[1]["temperature"]
    [face] = recognizer.predict(photo_folder / "happy" / "single_happy_astronaut.jpg")
    assert list(face.probabilities) == list(FOLDER_CLASSES) and face.label in FOLDER_CLASSES
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_load_face_folder(photo_folder, capsys):
    faces = load_face_folder(photo_folder)
    assert faces.classes == FOLDER_CLASSES
    assert faces.counts().tolist() == [2 + FER_FACES_PER_CLASS, 2 + FER_FACES_PER_CLASS, 2 + FER_FACES_PER_CLASS]
    assert faces.images.shape == (len(faces), 48, 48) and faces.images.dtype == np.uint8
    err = capsys.readouterr().err.splitlines()
    assert any("coffee.jpg: no face found" in line for line in err)
    assert any("broken.jpg is not an image" in line for line in err)
    # a 48x48 face is taken as it is, not searched for a face
    public = load_split("PublicTest")
    index = next(i for i, source in enumerate(faces.sources) if Path(source).name.startswith("fer"))
    row = int(Path(faces.sources[index]).stem[3:])
    assert np.array_equal(faces.images[index], public.images[np.flatnonzero(public.rows == row)[0]])


def test_folder_without_faces_is_a_data_error(tmp_path, photos_dir):
    for name in ("happy", "sad"):
        (tmp_path / name).mkdir()
        shutil.copy(photos_dir / "noface_coffee.jpg", tmp_path / name / "coffee.jpg")
    shutil.copy(photos_dir / "single_happy_astronaut.jpg", tmp_path / "happy" / "astronaut.jpg")
    with pytest.raises(DataError, match=r"no usable face image in .*sad/ \(2 of 3 images skipped\)"):
        load_face_folder(tmp_path)


def test_a_two_class_folder_can_be_reported(tmp_path):
    """What finish() does for a happy/ + sad/ folder: the report of the held-out part."""
    logits = np.array([[2.0, -1.0], [0.5, 1.5], [1.0, 0.0], [-1.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    metrics = evaluation_report(None, labels, ("happy", "sad"), tmp_path, title="two classes", logits=logits,
                                calibration_logits=logits, calibration_labels=labels, calibration_split="validation")
    assert metrics["accuracy"] == 0.75


def test_replace_head_keeps_the_rows_of_known_classes():
    torch.manual_seed(0)
    model = create_model("fastnet")
    before = model.head[-1].weight.detach().clone(), model.head[-1].bias.detach().clone()
    replace_head(model, EMOTIONS, ("happy", "sad", "neutral", "bored"))
    head = model.head[-1]
    assert head.out_features == 4 and model(torch.zeros(2, 1, 48, 48)).shape == (2, 4)
    known = [EMOTIONS.index(c) for c in ("happy", "sad", "neutral")]
    assert torch.equal(head.weight[:3], before[0][known]) and torch.equal(head.bias[:3], before[1][known])
    assert not torch.equal(head.weight[3], before[0][EMOTIONS.index("neutral")])  # "bored" starts fresh


# --- where --from looks, and the settings it implies --------------------------------------------


def bundle(tmp_path: Path, monkeypatch, entry: dict) -> None:
    """A weights folder at ``tmp_path`` whose manifest lists ``mine`` as ``entry``."""
    monkeypatch.setattr(ferkit.checkpoint, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(ferkit.checkpoint, "read_manifest", lambda: {"models": {"mine": entry}})


def test_bundled_checkpoint_is_checksum_verified(tmp_path, monkeypatch):
    torch.save({"model": create_model("fastnet").state_dict(), "arch": "fastnet", "model_kwargs": {},
                "meta": default_meta("fastnet", name="mine")}, tmp_path / "mine.pt")
    bundle(tmp_path, monkeypatch, {"checkpoint": "mine.pt", "checkpoint_sha256": "0" * 64})
    with pytest.raises(ModelError, match="checksum mismatch for checkpoint 'mine'"):
        load_checkpoint("mine")
    bundle(tmp_path, monkeypatch, {"checkpoint": "mine.pt", "checkpoint_sha256": sha256_of(tmp_path / "mine.pt")})
    assert resolve_checkpoint("mine") == tmp_path / "mine.pt" and load_checkpoint("mine")[1]["name"] == "mine"
    bundle(tmp_path, monkeypatch, {})  # no checkpoint listed: <name>.pt, unchecked
    assert resolve_checkpoint("mine") == tmp_path / "mine.pt"
    with pytest.raises(ModelError, match=r"no bundled checkpoint named 'nope' .*bundled: mine\)"):
        load_checkpoint("nope")
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.skipif(not (WEIGHTS_DIR / "default.pt").is_file(), reason="the bundled default checkpoint is not there")
def test_bundled_default_resolves():
    assert resolve_checkpoint("default") == WEIGHTS_DIR / "default.pt"
    assert load_checkpoint("default")[1]["classes"] == list(EMOTIONS)


def settings(*argv: str, parent: dict | None = None) -> argparse.Namespace:
    return resolve_settings(get_args_parser().parse_args(list(argv)), parent)


def test_settings_follow_the_recipe_and_the_parent():
    args = settings("--out", "runs/x")
    assert (args.arch, args.recipe, args.epochs, args.opt, args.preprocess, args.name) == \
        ("vgg", "default", 80, "sgd", "none", "x")
    assert settings("--recipe", "seed", "--epochs", "3").epochs == 3  # the command line wins over the recipe
    parent = default_meta("fastnet", preprocess="report")
    args = settings("--from", "p.pt", parent=parent)
    assert (args.arch, args.recipe, args.preprocess, args.opt) == ("fastnet", "finetune", "report", "adamw")
    with pytest.raises(FerkitError, match="--arch vgg differs from the architecture of --from p.pt"):
        settings("--from", "p.pt", "--arch", "vgg", parent=parent)


def test_fine_tuned_meta_inherits_how_faces_are_framed():
    parent = default_meta("fastnet", face_margin=0.1, unsure_threshold=0.3, mean=0.4)
    meta = run_meta(settings("--from", "p.pt", "--out", "runs/mine", parent=parent), parent)
    assert (meta["name"], meta["face_margin"], meta["unsure_threshold"], meta["mean"], meta["temperature"]) == \
        ("mine", 0.1, 0.3, 0.4, 1.0)
    fresh = run_meta(settings("--arch", "seed_cnn"), None)
    assert fresh["arch"] == "seed_cnn" and fresh["unsure_threshold"] == 0.4 and "face_margin" in fresh


# --- the loop's helpers ------------------------------------------------------------------------


def test_time_limit_lowers_the_epochs():
    args = TrainConfig(time_limit=100.0, epochs=50)
    rt = Runtime(0, 1, torch.device("cpu"))
    # after 2 epochs of 10 s: 100 s - 8 % reserve - 20 s elapsed leaves room for 7 more
    fit_epochs_to_time_limit(args, 10.0, 2, 20.0, rt)
    assert args.epochs == 9
    fit_epochs_to_time_limit(args, 10.0, 2, 95.0, rt)
    assert args.epochs == 3  # out of time: still finishes the epoch it is in
    roomy = TrainConfig(time_limit=1e6, epochs=5)
    fit_epochs_to_time_limit(roomy, 10.0, 2, 20.0, rt)
    assert roomy.epochs == 5  # never raised


def test_time_limit_plans_without_the_compiling_epochs():
    # 2 December: six compiled runs planned on epochs 1-2 (27 s compiling, then 3.4 s) and stopped at 22-26 of 200
    log = [{"epoch": 1, "seconds": 30.0}, {"epoch": 2, "seconds": 17.0}, {"epoch": 3, "seconds": 3.5}]
    assert planning_epoch_seconds(log[:2], settled=0) == 23.5  # without --compile every epoch counts
    assert planning_epoch_seconds(log, settled=2) is None      # one settled epoch is not enough
    log.append({"epoch": 4, "seconds": 3.7})
    assert planning_epoch_seconds(log, settled=2) == 3.7


def numbered_faces(labels: list[int] | np.ndarray, classes: tuple[str, ...] = ("a", "b", "c")) -> FaceSet:
    """Face i is filled with the value i, so a face can be traced through a split."""
    labels = np.asarray(labels, np.int64)
    images = np.repeat(np.arange(len(labels), dtype=np.uint8), 48 * 48).reshape(-1, 48, 48)
    return FaceSet(images, labels, classes)


def test_stratified_split():
    faces = numbered_faces(np.repeat([0, 1, 2], [10, 5, 1]))
    train, val = stratified_split(faces, 0.2, seed=0)
    assert val.counts().tolist() == [2, 1, 0] and train.counts().tolist() == [8, 4, 1]
    ids = lambda f: set(f.images[:, 0, 0].tolist())  # noqa: E731
    assert ids(train) | ids(val) == set(range(16)) and not ids(train) & ids(val)
    assert ids(stratified_split(faces, 0.2, seed=0)[1]) == ids(val)
    assert ids(stratified_split(faces, 0.2, seed=1)[1]) != ids(val)
    with pytest.raises(DataError, match="at least two images per class"):
        stratified_split(numbered_faces([0, 1, 2]), 0.2, seed=0)


def test_class_weights_favour_the_rare_class():
    labels = np.repeat([0, 1, 2], [90, 10, 0])
    w = class_weights(labels, 3)
    assert w[labels].mean() == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(3.0)  # 1 / sqrt(frequency): 9 times rarer, 3 times the weight
    assert np.isfinite(w).all()


def test_one_hot():
    assert one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert one_hot(np.array([1]), 2).dtype == np.float32


@pytest.mark.parametrize("dataset", ["fer2013", "ferplus"])
def test_soft_targets_are_distributions(dataset, fer_data):
    args = settings("--dataset", dataset, "--targets", "soft", "--report-splits", "PublicTest")
    train, targets, held_out = load_data(args, run_meta(args, None))
    assert targets.shape == (len(train), len(train.classes)) and targets.dtype == np.float32
    assert np.allclose(targets.sum(axis=1), 1.0, atol=1e-5) and (targets >= 0).all()
    assert (targets.max(axis=1) < 1).mean() > 0.3  # really soft: most faces split the annotators' votes
    assert list(held_out) == ["PublicTest"]


# --- the FER+ auxiliary head, offline distillation, resume, the run lock ---------------------------


def tiny_train(data: Path, out: Path, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return run(train_cmd("--data", str(data), "--arch", "fastnet", "--batch-size", "4", "--report-splits",
                         "PublicTest", "--out", str(out), *extra), timeout=timeout)


def test_aux_targets_mask_faces_without_votes():
    train = FaceSet(np.zeros((3, 48, 48), np.uint8), np.array([3, 4, 6]), EMOTIONS, np.array([0, 1, 2]))
    votes = np.zeros((3, 8), np.float32)
    votes[0, 3], votes[1, [4, 6]] = 10, (6, 4)
    aux = ferplus_aux_targets_from(train, votes)
    assert aux[0].tolist() == [0, 0, 0, 1, 0, 0, 0, 0] and aux[1][[4, 6]].tolist() == pytest.approx([0.6, 0.4])
    assert aux[2].sum() == 0  # no votes: left out of the loss
    logits = torch.randn(3, 8)
    whole = aux_loss(logits, torch.from_numpy(aux))
    two = aux_loss(logits[:2], torch.from_numpy(aux[:2]))
    assert whole.item() == pytest.approx(two.item())  # the face without votes adds nothing


def ferplus_aux_targets_from(train: FaceSet, votes: np.ndarray) -> np.ndarray:
    """ferplus_aux_targets with the votes file replaced by ``votes`` (rows = fer2013.csv rows)."""
    import ferkit.train as train_module

    original = train_module.read_ferplus_votes
    train_module.read_ferplus_votes = lambda path: (votes, None, None)
    try:
        return train_module.ferplus_aux_targets(train, Path("unused"))
    finally:
        train_module.read_ferplus_votes = original


def test_target_blocks_keep_labels_aux_and_tempered_teacher_apart():
    cfg = TrainConfig(label_smoothing=0.1, distill_temp=2.0)
    labels = one_hot(np.array([0, 2]), 3)
    teacher = np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6]], np.float32)
    aux = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
    targets, blocks = target_blocks(labels, cfg, aux, teacher)
    assert list(blocks) == ["hard", "label", "aux", "teacher"] and targets.shape == (2, 3 + 3 + 2 + 3)
    assert targets[:, blocks["hard"]].tolist() == labels.tolist()
    assert targets[0, blocks["label"]].tolist() == pytest.approx([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    tempered = targets[:, blocks["teacher"]]
    assert np.allclose(tempered.sum(axis=1), 1) and tempered[0, 0] < 0.8  # T = 2 flattens the teacher
    assert tempered[0].argmax() == 0


def test_teacher_probs_are_matched_by_row_and_must_cover_every_face(tmp_path):
    train = FaceSet(np.zeros((2, 48, 48), np.uint8), np.array([0, 1]), EMOTIONS, np.array([7, 3]))
    probs = np.eye(7, dtype=np.float32)[[1, 0, 2]]  # rows 3, 7, 9 of fer2013.csv
    arrays = {"classes": np.array(EMOTIONS), "members": np.array("[]"), "tta": np.array("flip"),
              "Training_probs": probs, "Training_rows": np.array([3, 7, 9]), "Training_labels": np.array([1, 0, 2])}
    write_ensemble_file(tmp_path / "t.npz", arrays)
    assert read_teacher_probs(tmp_path / "t.npz", train).argmax(1).tolist() == [0, 1]  # row 7 first, then row 3
    short = arrays | {"Training_probs": probs[:1], "Training_rows": np.array([3]), "Training_labels": np.array([1])}
    write_ensemble_file(tmp_path / "short.npz", short)
    with pytest.raises(DataError, match="no probabilities for 1 training faces"):
        read_teacher_probs(tmp_path / "short.npz", train)


def test_distillation_from_an_ensemble_file_end_to_end(tmp_path, tiny_fer_dir):
    for seed in ("0", "1"):
        proc = tiny_train(tiny_fer_dir, tmp_path / f"m{seed}", "--epochs", "1", "--seed", seed)
        assert proc.returncode == 0, proc.stderr
    ens = run([sys.executable, "-m", "ferkit", "ensemble", str(tmp_path / "m0"), str(tmp_path / "m1"),
               "--data", str(tiny_fer_dir), "--device", "cpu", "--out", str(tmp_path / "teacher.npz")])
    assert ens.returncode == 0, ens.stderr
    teacher = read_ensemble_file(tmp_path / "teacher.npz")
    assert teacher["Training_probs"].shape == (14, 7) and np.allclose(teacher["Training_probs"].sum(1), 1, atol=1e-5)
    assert json.loads(str(teacher["members"])) == [str(tmp_path / "m0"), str(tmp_path / "m1")]
    assert "| ensemble |" in ens.stdout
    student = tiny_train(tiny_fer_dir, tmp_path / "student", "--epochs", "1", "--teacher-probs",
                         str(tmp_path / "teacher.npz"))
    assert student.returncode == 0, student.stderr
    assert "| aux, teacher" in student.stdout
    assert load_checkpoint(tmp_path / "student" / "best.pt")[1]["provenance"]["teacher_probs"] == "teacher.npz"


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_fer_dir):
    """Kill after epoch 1 and resume == two epochs in one go: weights, augmentation and dropout draws included."""
    common = ("--sched", "plateau", "--seed", "3")  # plateau: the schedule does not depend on --epochs
    assert tiny_train(tiny_fer_dir, tmp_path / "straight", "--epochs", "2", *common).returncode == 0
    assert tiny_train(tiny_fer_dir, tmp_path / "resumed", "--epochs", "1", *common).returncode == 0
    resumed = tiny_train(tiny_fer_dir, tmp_path / "resumed", "--epochs", "2", *common)
    assert resumed.returncode == 0 and "resuming" in resumed.stdout
    a = read_checkpoint(tmp_path / "straight" / "last.pt")
    b = read_checkpoint(tmp_path / "resumed" / "last.pt")
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), atol=1e-6), key
    assert [r["train_loss"] for r in a["log"]] == pytest.approx([r["train_loss"] for r in b["log"]], abs=1e-6)


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, tiny_fer_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(f"{os.getpid()}\n")  # this test process is alive: the folder is taken
    proc = tiny_train(tiny_fer_dir, out, "--epochs", "1")
    assert proc.returncode == 1 and f"in use by another ferkit train (pid {os.getpid()})" in proc.stderr
    assert "Traceback" not in proc.stderr and not (out / "last.pt").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".lock").write_text(f"{dead.pid}\n")  # a killed run's lock: taken over
    proc = tiny_train(tiny_fer_dir, out, "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    assert not (out / ".lock").exists()


def test_a_truncated_last_checkpoint_names_the_way_out(tmp_path, tiny_fer_dir):
    out = tmp_path / "run"
    assert tiny_train(tiny_fer_dir, out, "--epochs", "1").returncode == 0
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 3])
    proc = tiny_train(tiny_fer_dir, out, "--epochs", "2")
    assert proc.returncode == 1 and "--no-resume" in proc.stderr and "Traceback" not in proc.stderr
    assert tiny_train(tiny_fer_dir, out, "--epochs", "1", "--no-resume").returncode == 0


def test_checkpoints_hold_only_plain_values(tmp_path, tiny_fer_dir):
    out = tmp_path / "run"
    assert tiny_train(tiny_fer_dir, out, "--epochs", "1").returncode == 0
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(out / name, weights_only=True)  # raises if anything but tensors and plain types
        assert {"model", "meta", "rng", "optimizer"} <= set(ckpt)


@pytest.mark.parametrize("command", ["train", "export", "ensemble"])
def test_help_works_without_torch_and_running_names_the_extra(command, tmp_path):
    from conftest import NO_TORCH

    env = {**os.environ, "PYTHONPATH": str(NO_TORCH)}
    helped = subprocess.run([sys.executable, "-m", "ferkit", command, "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=env)
    assert helped.returncode == 0 and helped.stdout.startswith(f"usage: ferkit {command}"), helped.stderr
    args = {"train": ["--out", str(tmp_path / "r")], "export": ["x.pt", "--out", str(tmp_path / "x.onnx")],
            "ensemble": ["runs/a", "--out", str(tmp_path / "e.npz")]}[command]
    ran = subprocess.run([sys.executable, "-m", "ferkit", command, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=env)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert ran.stderr.strip().splitlines() == [f"ferkit: error: ferkit {command} needs torch and onnx "
                                               f"(No module named '{'onnx' if command == 'export' else 'torch'}' "
                                               "(hidden by tests/no_torch)): pip install 'ferkit[train]'"]


def test_a_validation_part_too_small_keeps_the_parents_calibration():
    """6 held-out faces once fitted T = 0.05: "happy 100 %" on wrong answers. Now the parent's T and threshold stay."""
    from ferkit.train import calibrate

    meta = default_meta("fastnet", temperature=0.848, unsure_threshold=0.52)
    logits = np.array([[4.0, 0.0, 0.0]] * 3 + [[0.0, 4.0, 0.0]] * 3)
    said = calibrate(meta, logits, np.array([0, 0, 0, 1, 1, 1]), "validation")
    assert (meta["temperature"], meta["unsure_threshold"]) == (0.848, 0.52)
    assert said == "kept T = 0.848 and unsure below 0.52: validation has 6 faces, fewer than the 50 needed"
    parent = default_meta("fastnet", temperature=0.848)
    assert run_meta(settings("--from", "p.pt", "--out", "runs/mine", parent=parent), parent)["temperature"] == 0.848
