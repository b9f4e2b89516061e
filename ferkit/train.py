"""Train a facial-expression model. Read it top to bottom: settings, data, model, loop, results.

Data and augmentation live on the device (the whole FER2013 training split is 66 MB of uint8),
so no loader process is ever on the critical path; the forward/backward pass runs in bfloat16
autocast on a GPU. The best epoch is chosen on PublicTest; PrivateTest is only ever reported.

    ferkit train --arch vgg --out runs/vgg                     # the default recipe (+ the FER+ auxiliary head)
    ferkit train --arch seed_cnn --recipe seed --out runs/seed # the original report's recipe
    ferkit train --arch vgg --teacher-probs runs/teacher.npz --out runs/student   # distil a `ferkit ensemble`
    ferkit train --from default --data-folder my_faces/ --out runs/mine   # fine-tune on your images
    torchrun --nproc_per_node=2 -m ferkit.train --arch vgg ... # data-parallel on 2 GPUs (DDP)

Interrupted runs resume from ``<out>/last.pt`` (written atomically after every epoch, with the
random-number states, so a resumed run draws what an uninterrupted one would). A lock file keeps a
second run out of the same folder. Checkpoints hold only tensors and plain values and are read with
``torch.load(weights_only=True)``: a crafted .pt cannot run code here. At the end, ``best.pt``
gets the temperature fitted on the validation split (PublicTest, or the held-out part of
--data-folder), ``<out>/report/`` the evaluation of that split and ``logits.npz`` the logits of
every held-out split and TTA mode (for ``ferkit evaluate --probs``). ``ferkit export <out>/best.pt``
turns the model into the ONNX file ``ferkit.load`` reads.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .augment import AUGMENTS, augment_batch, mix_batch
from .calibration import MIN_FIT_FACES, TEMPERATURE_BOUNDS, fit_temperature, fit_unsure_threshold, softmax
from .checkpoint import clean_stale_temps, load_checkpoint, read_checkpoint, save_checkpoint
from .data import (FERPLUS_CSV, FaceSet, ferplus_votes_as_fer2013, load_ferplus_split, load_split,
                   read_ferplus_votes)
from .ensemble import read_ensemble_file
from .errors import DataError, FerkitError, ModelError
from .evaluate import evaluation_report, write_logits_npz
from .fileio import atomic_path, write_text
from .labels import EMOTIONS, FERPLUS_EMOTIONS
from .meta import default_meta
from .models import count_params, create_model
from .settings import data_dir
from .torch_infer import faces_to_device, normalise, predict_logits, tta_tensor
from .train_config import RECIPES, UNSURE_THRESHOLD, TrainConfig, get_args_parser, resolve_settings  # noqa: F401
from .tta import TTA_MODES
from .userdata import load_face_folder

# What a fine-tuned model inherits from its parent: how faces are framed and scaled, and its calibration
# (kept when the user's validation part is too small to fit one).
INHERITED_META = ("input_size", "channels", "mean", "std", "face_margin", "temperature", "unsure_threshold")
LOCK_FILE = ".lock"
COMPILE_WARMUP_EPOCHS = 2  # epochs that torch.compile spends compiling: not a measure of speed (--time-limit)
# share of --time-limit kept for start-up, the final TTA evaluation and slack (at 15 %, the g4 runs of 2 Dec, T=380,
# trained 310 s and left over a minute unused)
TIME_LIMIT_RESERVE = 0.08


# --- distributed helpers (a no-op on one device) ----------------------------------------------


@dataclass(frozen=True)
class Runtime:
    rank: int
    world: int
    device: torch.device


def setup_distributed(requested: str | None) -> Runtime:
    """Under torchrun, one process per GPU (NCCL) or per CPU rank (gloo); else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = torch.cuda.is_available() and (requested is None or requested.startswith("cuda"))
    if world == 1:
        return Runtime(0, 1, torch.device(requested or ("cuda" if want_cuda else "cpu")))
    local_rank = int(os.environ["LOCAL_RANK"])
    if want_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if want_cuda else "gloo")
    return Runtime(dist.get_rank(), world, device)


def all_reduce_sum(values: list[float], rt: Runtime) -> list[float]:
    if rt.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    dist.all_reduce(t)
    return t.tolist()


# --- data ------------------------------------------------------------------------------------


def load_data(cfg: TrainConfig, meta: dict) -> tuple[FaceSet, np.ndarray, dict[str, FaceSet]]:
    """(train faces, train targets (N, C) soft, held-out splits); the first held-out split is the validation split.

    A user's photos (--data-folder) are cropped as at inference, at ``meta``'s input size and face margin.
    """
    if cfg.data_folder:
        faces = load_face_folder(cfg.data_folder, size=meta["input_size"], margin=meta["face_margin"])
        if len(faces.classes) < 2:
            raise DataError(f"{cfg.data_folder} has one class folder ({faces.classes[0]}): a model needs two or more")
        train, val = stratified_split(faces, cfg.val_fraction, cfg.seed)
        return train, one_hot(train.labels, len(faces.classes)), {"validation": val}
    root = data_dir(cfg.data)
    held_out = ("PublicTest", *cfg.report_splits)
    if cfg.dataset == "ferplus":
        train = load_ferplus_split("Training", root)
        votes = train.votes / train.votes.sum(axis=1, keepdims=True)
        targets = votes if cfg.targets == "soft" else one_hot(train.labels, len(FERPLUS_EMOTIONS))
        return train, targets.astype(np.float32), {s: load_ferplus_split(s, root) for s in held_out}
    train = load_split("Training", root)
    targets = one_hot(train.labels, len(EMOTIONS))
    if cfg.targets == "soft":
        # FER+ votes for the same images, mapped onto FER2013's 7 classes; rows without votes keep their label.
        votes, _, _ = read_ferplus_votes(root / FERPLUS_CSV)
        mapped = ferplus_votes_as_fer2013(votes[train.rows])
        has_votes = votes[train.rows][:, : len(EMOTIONS)].sum(axis=1) > 0
        targets = np.where(has_votes[:, None], mapped, targets).astype(np.float32)
    return train, targets, {s: load_split(s, root) for s in held_out}


def use_aux_ferplus(cfg: TrainConfig) -> bool:
    """Whether the auxiliary FER+ head trains: --aux-ferplus on, or auto with FER2013 and the votes file present."""
    if cfg.aux_ferplus == "off":
        return False
    if cfg.data_folder or cfg.dataset != "fer2013":
        if cfg.aux_ferplus == "on":
            raise FerkitError("--aux-ferplus on needs --dataset fer2013 (the FER+ votes of the FER2013 faces)")
        return False
    present = (data_dir(cfg.data) / FERPLUS_CSV).is_file()
    if cfg.aux_ferplus == "on" and not present:
        raise DataError(f"--aux-ferplus on needs {FERPLUS_CSV} in {data_dir(cfg.data)}")
    return present


def ferplus_aux_targets(train: FaceSet, root: Path) -> np.ndarray:
    """(N, 8) FER+ vote distributions of the training faces (FERPLUS_EMOTIONS order); all-zero rows for faces
    without emotion votes, which the loss leaves out."""
    votes, _, _ = read_ferplus_votes(root / FERPLUS_CSV)
    if len(votes) <= train.rows.max():
        raise DataError(f"{root / FERPLUS_CSV} has {len(votes)} rows but Training needs row {train.rows.max()}")
    v = votes[train.rows]
    total = v.sum(axis=1, keepdims=True)
    return np.divide(v, total, out=np.zeros_like(v), where=total > 0).astype(np.float32)


def read_teacher_probs(path: str | Path, train: FaceSet) -> np.ndarray:
    """(N, C) teacher probabilities of the training faces, matched by fer2013.csv row, from `ferkit ensemble`."""
    teacher = read_ensemble_file(path)
    if tuple(teacher["classes"]) != tuple(train.classes):
        raise DataError(f"{path} holds probabilities over {list(teacher['classes'])}; the run trains "
                        f"{list(train.classes)}")
    if "Training_probs" not in teacher:
        raise DataError(f"{path} has no Training_probs: write it with `ferkit ensemble ... --splits Training ...`")
    where = {int(r): i for i, r in enumerate(teacher["Training_rows"])}
    missing = [int(r) for r in train.rows if int(r) not in where]
    if missing:
        raise DataError(f"{path} has no probabilities for {len(missing)} training faces (e.g. row {missing[0]}): "
                        "it was written for other data")
    return teacher["Training_probs"][[where[int(r)] for r in train.rows]].astype(np.float32)


def one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels]


def stratified_split(faces: FaceSet, fraction: float, seed: int) -> tuple[FaceSet, FaceSet]:
    """Hold out ``fraction`` of each class (at least one face of every class with two or more)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(faces), bool)
    for c in range(len(faces.classes)):
        idx = rng.permutation(np.flatnonzero(faces.labels == c))
        if len(idx) >= 2:
            held[idx[: max(1, round(fraction * len(idx)))]] = True
    if not held.any() or held.all():
        raise DataError("too few images to hold out a validation part: give at least two images per class")
    return faces.subset(~held), faces.subset(held)


def class_weights(labels: np.ndarray, n: int) -> np.ndarray:
    """~ 1/sqrt(frequency), normalised to mean 1 over the training faces."""
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1))
    return (w / (w[labels].mean())).astype(np.float32)


@dataclass
class TrainData:
    """Everything an epoch reads, on the device.

    ``targets`` (N, K) holds column blocks that mixup mixes together: ``label`` (the smoothed label
    targets), ``aux`` (FER+ vote distributions, zero rows without votes), ``teacher`` (tempered teacher
    probabilities); ``blocks`` names their columns.
    """

    images: torch.Tensor                # (N, 1, S, S) uint8
    targets: torch.Tensor               # (N, K) float32
    blocks: dict[str, slice]
    val_views: torch.Tensor             # (V, M, 1, S, S) uint8
    val_labels: torch.Tensor            # (M,) int64
    weights: torch.Tensor | None        # (C,) class weights of the loss, or None
    sample_p: torch.Tensor | None       # (N,) sampling weights, or None
    teachers: list[torch.nn.Module]     # online distillation


def target_blocks(label: np.ndarray, cfg: TrainConfig, aux: np.ndarray | None,
                  teacher: np.ndarray | None) -> tuple[np.ndarray, dict[str, slice]]:
    """The (N, K) targets of TrainData: smoothed labels, then the optional aux and tempered teacher blocks."""
    smoothed = label * (1 - cfg.label_smoothing) + cfg.label_smoothing / label.shape[1]
    parts = {"hard": label, "label": smoothed}
    if aux is not None:
        parts["aux"] = aux
    if teacher is not None:
        tempered = np.power(np.clip(teacher, 1e-8, None), 1.0 / cfg.distill_temp)
        parts["teacher"] = tempered / tempered.sum(axis=1, keepdims=True)
    blocks, start = {}, 0
    for name, block in parts.items():
        blocks[name] = slice(start, start + block.shape[1])
        start += block.shape[1]
    return np.concatenate(list(parts.values()), axis=1).astype(np.float32), blocks


# --- model, optimiser, schedule ----------------------------------------------------------------


class AuxHead(torch.nn.Module):
    """The training-time wrapper: the classifier, plus an optional second head on its pooled features.

    ``forward`` returns (logits, aux logits or None). Only ``classifier`` is saved as ``model`` and exported.
    """

    def __init__(self, classifier: torch.nn.Module, aux_classes: int = 0, input_size: int = 48):
        super().__init__()
        self.classifier = classifier
        self.aux = None
        if aux_classes:
            width = feature_channels(classifier, input_size)
            self.aux = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                           torch.nn.Linear(width, aux_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.classifier.forward_features(x)
        logits = self.classifier.forward_head(features)
        return logits, (self.aux(features) if self.aux is not None else None)


def feature_channels(classifier: torch.nn.Module, input_size: int) -> int:
    """Channels of ``forward_features`` (one dummy face in eval mode, so BN statistics stay as they are)."""
    was_training = classifier.training
    with torch.no_grad():
        channels = classifier.eval().forward_features(torch.zeros(1, 1, input_size, input_size)).shape[1]
    classifier.train(was_training)
    return int(channels)


def run_meta(cfg: TrainConfig, parent: dict | None) -> dict:
    """The metadata stored in the checkpoints (meta.py); classes are set once the data is read."""
    inherited = {k: parent[k] for k in INHERITED_META} if parent else {"unsure_threshold": UNSURE_THRESHOLD}
    provenance = {"recipe": cfg.recipe, "dataset": cfg.dataset, "init_from": cfg.init_from,
                  "teacher_probs": Path(cfg.teacher_probs).name if cfg.teacher_probs else None}
    return default_meta(cfg.arch, name=cfg.name, preprocess=cfg.preprocess, provenance=provenance, **inherited)


def build_model(cfg: TrainConfig, classes: tuple[str, ...],
                parent: tuple[torch.nn.Module, dict] | None) -> torch.nn.Module:
    """A new model, or the --from checkpoint's with a last layer for ``classes`` when they differ from its own."""
    if parent is None:
        return create_model(cfg.arch, num_classes=len(classes))
    model, meta = parent
    if tuple(meta["classes"]) != tuple(classes):
        replace_head(model, tuple(meta["classes"]), classes)
    return model


def replace_head(model: torch.nn.Module, old_classes: tuple[str, ...], classes: tuple[str, ...]) -> None:
    """A user's own class set: keep the features, new last layer; a class the model knew keeps its row."""
    old = model.head[-1] if isinstance(getattr(model, "head", None), torch.nn.Sequential) else None
    if not isinstance(old, torch.nn.Linear):
        raise ModelError(f"cannot fine-tune {type(model).__name__} on new classes: "
                         "its head does not end in a Linear layer")
    new = torch.nn.Linear(old.in_features, len(classes))
    with torch.no_grad():
        for i, name in enumerate(classes):
            if name in old_classes:
                new.weight[i] = old.weight[old_classes.index(name)]
                new.bias[i] = old.bias[old_classes.index(name)]
    model.head[-1] = new


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.opt == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    loss = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (B,)
    if weights is not None:
        loss = loss * (targets @ weights)
    return loss.mean()


def distillation_loss(student: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student / T) x T^2; ``teacher_probs`` are already tempered (softmax(teacher / T))."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), teacher_probs, reduction="batchmean") * t * t


def aux_loss(aux_logits: torch.Tensor, votes: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy over the faces that have votes: a row's weight is its vote mass (1, 0, or mixed)."""
    mass = votes.sum(dim=1)  # (B,)
    per_row = -(votes * F.log_softmax(aux_logits.float(), dim=1)).sum(dim=1)
    return per_row.sum() / mass.sum().clamp(min=1.0)


# --- the run's state, one epoch, validation ----------------------------------------------------


@dataclass
class TrainState:
    """What changes while a run trains; ``model`` is the wrapped (DDP / compiled) AuxHead, ``net`` the bare one."""

    cfg: TrainConfig
    rt: Runtime
    model: torch.nn.Module
    net: AuxHead
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    generator: torch.Generator
    meta: dict
    steps_per_epoch: int
    step: int = 0
    epoch: int = 0
    best: float = -1.0
    log: list[dict] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    @property
    def warmup_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.warmup_epochs


def batch_loss(state: TrainState, data: TrainData, x: torch.Tensor,
               y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) of one mixed batch: label loss, distillation and the FER+ head, weighted by the config."""
    cfg, b = state.cfg, data.blocks
    logits, aux_logits = state.model(x)
    loss = soft_cross_entropy(logits, y[:, b["label"]], data.weights)
    if "teacher" in b or data.teachers:
        if data.teachers:
            with torch.no_grad():
                teacher = torch.stack([t(x).float() for t in data.teachers]).mean(0)
            target = F.softmax(teacher / cfg.distill_temp, 1)
        else:
            target = y[:, b["teacher"]]
        kd = distillation_loss(logits, target, cfg.distill_temp)
        loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd
    if aux_logits is not None:
        loss = loss + cfg.aux_weight * aux_loss(aux_logits, y[:, b["aux"]])
    return loss, logits


def train_one_epoch(state: TrainState, data: TrainData, epoch: int) -> dict:
    cfg, rt = state.cfg, state.rt
    state.model.train()
    n = data.images.shape[0]
    per_rank = cfg.batch_size // rt.world
    # Every rank draws the same global order, then takes its own slice of each global batch.
    g = torch.Generator(device="cpu").manual_seed(cfg.seed * 1000 + epoch)
    order = (torch.multinomial(data.sample_p, n, replacement=True, generator=g) if data.sample_p is not None
             else torch.randperm(n, generator=g)).to(rt.device)
    aug = AUGMENTS[cfg.aug]
    loss_sum = torch.zeros((), device=rt.device)
    correct = torch.zeros((), device=rt.device)
    count = 0
    bar = tqdm(range(state.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=rt.rank != 0 or not sys.stderr.isatty())
    for step in bar:
        if cfg.sched == "cosine":
            for group in state.optimizer.param_groups:
                group["lr"] = cosine_lr(state.step, state.total_steps, state.warmup_steps, cfg.lr)
        start = step * cfg.batch_size + rt.rank * per_rank
        idx = order[start:start + per_rank]
        x = augment_batch(data.images[idx].float() / 255.0, aug, state.generator)
        x = normalise(x, state.meta).contiguous(memory_format=torch.channels_last)
        hard = data.targets[idx, data.blocks["hard"]]
        x, y = mix_batch(x, data.targets[idx], cfg.mixup_alpha, generator=state.generator)
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.device.type == "cuda"):
            loss, logits = batch_loss(state, data, x, y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.step += 1
        loss_sum += loss.detach() * len(idx)  # accumulated on the device: no sync per step
        correct += (logits.argmax(1) == hard.argmax(1)).sum()
        count += len(idx)
    loss_total, correct_total, count_total = all_reduce_sum([loss_sum.item(), correct.item(), count], rt)
    return {"train_loss": loss_total / count_total, "train_acc": correct_total / count_total}


def validate(state: TrainState, data: TrainData) -> dict:
    """Accuracy and NLL on the validation views; each rank scores its shard, sums are reduced."""
    rt = state.rt
    shard = slice(rt.rank, None, rt.world)
    logits = predict_logits(state.net.classifier, data.val_views[:, shard], state.meta)
    y = data.val_labels[shard]
    sums = [F.cross_entropy(logits, y, reduction="sum").item(), (logits.argmax(1) == y).sum().item(), len(y)]
    nll, correct, count = all_reduce_sum(sums, rt)
    return {"val_loss": nll / count, "val_acc": correct / count}


# --- checkpoints and run files -----------------------------------------------------------------


def checkpoint_dict(state: TrainState) -> dict:
    """The training checkpoint: tensors and plain values only (read back with weights_only=True)."""
    rng = {"torch": torch.get_rng_state(), "generator": state.generator.get_state()}
    if state.rt.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(state.rt.device)
    return {
        "model": state.net.classifier.state_dict(), "arch": state.cfg.arch, "model_kwargs": {}, "meta": state.meta,
        "aux_head": state.net.aux.state_dict() if state.net.aux is not None else None,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict() if state.scheduler else None,
        "epoch": state.epoch, "best_metric": state.best, "args": asdict(state.cfg), "log": state.log, "rng": rng,
    }


def resume(state: TrainState, path: Path) -> None:
    """Continue from ``path`` (last.pt): weights, optimiser, schedule, log and random-number states."""
    try:
        ckpt = read_checkpoint(path)
    except ModelError as e:
        raise ModelError(f"{e}; to start afresh, pass --no-resume (or remove {path})") from None
    state.net.classifier.load_state_dict(ckpt["model"])
    if state.net.aux is not None and ckpt.get("aux_head") is not None:
        state.net.aux.load_state_dict(ckpt["aux_head"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if state.scheduler and ckpt["scheduler"]:
        state.scheduler.load_state_dict(ckpt["scheduler"])
    state.epoch, state.best, state.log = ckpt["epoch"] + 1, ckpt["best_metric"], ckpt["log"]
    state.step = state.epoch * state.steps_per_epoch
    rng = ckpt.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "generator" in rng:
        state.generator.set_state(rng["generator"])
    if "cuda" in rng and state.rt.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], state.rt.device)


class RunLock:
    """``<out>/.lock`` holding the writer's pid: a second run into the same folder is refused, one line.

    A lock whose process is gone (a killed run) is taken over.
    """

    def __init__(self, out: Path):
        self.path = out / LOCK_FILE

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _pid_alive(holder):
                    raise FerkitError(f"{self.path.parent} is in use by another ferkit train (pid {holder}): "
                                      "give this run its own --out") from None
                self.path.unlink(missing_ok=True)  # a stale lock
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return self
        raise FerkitError(f"cannot take the lock {self.path}")

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __exit__(self, *exc) -> None:
        if self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_log(out: Path, log: list[dict]) -> None:
    with atomic_path(out / "log.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log[0]))
        writer.writeheader()
        writer.writerows(log)
    write_text(out / "log.json", json.dumps(log, indent=1))


def plot_curves(out: Path, log: list[dict], val_split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in log]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(epochs, [r["train_loss"] for r in log], label="train")
    a.plot(epochs, [r["val_loss"] for r in log], label=f"validation ({val_split})")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    b.plot(epochs, [r["train_acc"] for r in log], label="train (augmented)")
    b.plot(epochs, [r["val_acc"] for r in log], label=f"validation ({val_split})")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(out / "curves.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def fit_epochs_to_time_limit(cfg: TrainConfig, epoch_seconds: float, epoch: int, elapsed: float,
                             rt: Runtime) -> None:
    """Lower cfg.epochs so that the run ends within --time-limit (all ranks agree on rank 0's answer)."""
    reserve = TIME_LIMIT_RESERVE * cfg.time_limit
    affordable = epoch + int((cfg.time_limit - reserve - elapsed) // max(epoch_seconds, 1e-3))
    epochs = torch.tensor([min(cfg.epochs, max(affordable, epoch + 1))], device=rt.device)
    if rt.world > 1:
        dist.broadcast(epochs, src=0)
    if int(epochs) < cfg.epochs:
        if rt.rank == 0:
            print(f"time limit {cfg.time_limit:.0f} s at {epoch_seconds:.1f} s/epoch: "
                  f"{cfg.epochs} epochs -> {int(epochs)}", flush=True)
        cfg.epochs = int(epochs)


def planning_epoch_seconds(log: list[dict], settled: int) -> float | None:
    """The epoch time --time-limit plans with: the slower of the last epoch and the mean of the last three, counting
    only epochs after ``settled`` (with --compile the first epochs also compile and capture CUDA graphs, several
    times slower than the rest); None until two such epochs have run."""
    recent = [r["seconds"] for r in log[-3:] if r["epoch"] > settled]
    if len(recent) < 2:
        return None
    return max(recent[-1], sum(recent) / len(recent))


# --- main: setup, resume, fit, finish ----------------------------------------------------------


def setup(cfg: TrainConfig, rt: Runtime, parent: tuple[torch.nn.Module, dict] | None
          ) -> tuple[TrainState, TrainData, dict[str, FaceSet]]:
    """The state, the device data and the held-out splits of a fresh run."""
    torch.manual_seed(cfg.seed + rt.rank)
    torch.backends.cudnn.benchmark = True
    meta = run_meta(cfg, parent[1] if parent else None)
    train, label_targets, held_out = load_data(cfg, meta)
    if cfg.subset:
        train = train.subset(np.arange(min(cfg.subset, len(train))))
        label_targets = label_targets[: len(train)]
        held_out = {k: v.subset(np.arange(min(cfg.subset, len(v)))) for k, v in held_out.items()}
    meta["classes"] = list(train.classes)
    aux = ferplus_aux_targets(train, data_dir(cfg.data)) if use_aux_ferplus(cfg) else None
    teacher = read_teacher_probs(cfg.teacher_probs, train) if cfg.teacher_probs else None
    targets, blocks = target_blocks(label_targets, cfg, aux, teacher)
    val = next(iter(held_out.values()))
    w = class_weights(train.labels, len(train.classes))
    dev = rt.device
    data = TrainData(
        images=faces_to_device(train.images, dev, cfg.preprocess), targets=torch.from_numpy(targets).to(dev),
        blocks=blocks, val_views=tta_tensor(val.images, cfg.eval_tta, dev, cfg.preprocess),
        val_labels=torch.from_numpy(val.labels).to(dev),
        weights=torch.from_numpy(w).to(dev) if cfg.balance == "loss" else None,
        sample_p=torch.from_numpy(w[train.labels].astype(np.float64)) if cfg.balance == "sampler" else None,
        teachers=[load_checkpoint(p)[0].to(dev, memory_format=torch.channels_last) for p in cfg.distill or []],
    )
    net = AuxHead(build_model(cfg, train.classes, parent), len(FERPLUS_EMOTIONS) if aux is not None else 0,
                  meta["input_size"])
    net = net.to(dev, memory_format=torch.channels_last)
    optimizer = build_optimizer(net, cfg)
    scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3, min_lr=1e-6)
                 if cfg.sched == "plateau" else None)
    generator = torch.Generator(device=dev).manual_seed(cfg.seed * 7919 + rt.rank)
    state = TrainState(cfg, rt, net, net, optimizer, scheduler, generator, meta,
                       steps_per_epoch=max(1, len(train) // cfg.batch_size))
    return state, data, held_out


def wrap(state: TrainState) -> None:
    """DDP across ranks and torch.compile, around the bare network (after a resume has loaded it)."""
    if state.rt.world > 1:
        ids = [state.rt.device.index] if state.rt.device.type == "cuda" else None
        state.model = torch.nn.parallel.DistributedDataParallel(state.net, device_ids=ids)
    if state.cfg.compile:
        state.model = torch.compile(state.model, mode=state.cfg.compile_mode)


def fit(state: TrainState, data: TrainData, out: Path, val_split: str) -> None:
    """Epochs until cfg.epochs (which --time-limit may lower); best.pt on a better validation accuracy."""
    cfg, rt = state.cfg, state.rt
    started, first = time.time(), state.epoch
    settled = first + (COMPILE_WARMUP_EPOCHS if cfg.compile else 0)
    while state.epoch < cfg.epochs:
        t0 = time.time()
        seconds = planning_epoch_seconds(state.log, settled) if cfg.time_limit else None
        if seconds:  # re-checked every epoch: sharing a GPU, epochs slow down
            fit_epochs_to_time_limit(cfg, seconds, state.epoch, time.time() - started, rt)
        stats = train_one_epoch(state, data, state.epoch) | validate(state, data)
        if state.scheduler:
            state.scheduler.step(stats["val_loss"])
        row = {"epoch": state.epoch + 1, **{k: round(v, 5) for k, v in stats.items()},
               "lr": state.optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
        state.log.append(row)
        if rt.rank == 0:
            improved = stats["val_acc"] > state.best
            state.best = max(state.best, stats["val_acc"])
            if improved:
                save_checkpoint(out / "best.pt", checkpoint_dict(state))
            save_checkpoint(out / "last.pt", checkpoint_dict(state))
            write_log(out, state.log)
            print(" ".join(f"{k}={v}" for k, v in row.items()) + (" *" if improved else ""), flush=True)
        state.epoch += 1


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    parent = load_checkpoint(args.init_from) if args.init_from else None  # (model, meta), on the CPU
    cfg = resolve_settings(args, parent[1] if parent else None)
    rt = setup_distributed(cfg.device)
    if cfg.batch_size % rt.world:
        raise FerkitError(f"--batch-size {cfg.batch_size} must divide evenly over {rt.world} ranks")
    out = Path(cfg.out)
    with RunLock(out) if rt.rank == 0 else contextlib.nullcontext():
        try:
            run(cfg, rt, parent, out)
        finally:
            if rt.world > 1:
                dist.destroy_process_group()
    return 0


def run(cfg: TrainConfig, rt: Runtime, parent, out: Path) -> None:
    if rt.rank == 0:
        for stale in clean_stale_temps(out):
            print(f"removed {stale}, left by a run killed while saving", flush=True)
    state, data, held_out = setup(cfg, rt, parent)
    if (out / "last.pt").is_file() and not cfg.no_resume:
        resume(state, out / "last.pt")
        if rt.rank == 0:
            print(f"resuming {out / 'last.pt'} at epoch {state.epoch + 1}", flush=True)
    wrap(state)
    val_split = next(iter(held_out))
    if rt.rank == 0:
        write_text(out / "args.json", json.dumps(asdict(cfg), indent=1))
        extras = [name for name in ("aux", "teacher") if name in data.blocks]
        extras += ["online teachers"] if data.teachers else []
        print(f"{cfg.arch}: {count_params(state.net.classifier):,} parameters | train {len(data.images)} faces, "
              f"{val_split} {len(data.val_labels)} | {cfg.recipe} recipe, {cfg.epochs} epochs, batch {cfg.batch_size} "
              f"on {rt.world} x {rt.device.type}" + (f" | {', '.join(extras)}" if extras else ""), flush=True)
    fit(state, data, out, val_split)
    if rt.rank == 0:
        write_text(out / "args.json", json.dumps(asdict(cfg), indent=1))  # with the epochs actually run
        plot_curves(out, state.log, val_split)
        finish(out, cfg, held_out, rt.device)
    if rt.world > 1:  # the other ranks wait for rank 0's finish: a gloo group torn down early can abort at exit
        dist.barrier()


def calibrate(meta: dict, logits: np.ndarray, labels: np.ndarray, split: str) -> str:
    """Fit the temperature and the unsure threshold of ``meta`` on single-view validation logits (in place).

    A validation part too small to calibrate on (a fine-tuning folder of a few faces) keeps the values the
    model already has (the parent's, or T = 1): a T fitted on 6 faces makes a model claim 100 % on wrong
    answers. Returns a sentence for the summary saying which happened.
    """
    n = len(labels)
    temperature = fit_temperature(logits, labels) if n >= MIN_FIT_FACES else None
    if temperature is None or temperature <= TEMPERATURE_BOUNDS[0] * 1.001:  # at the lower bound: overconfident
        why = (f"{split} has {n} faces, fewer than the {MIN_FIT_FACES} needed" if temperature is None
               else f"the fit on {split} stopped at its lower bound ({temperature:.3f})")
        return f"kept T = {meta['temperature']:.3f} and unsure below {meta['unsure_threshold']:.2f}: {why}"
    meta["temperature"] = temperature
    meta["unsure_threshold"] = fit_unsure_threshold(softmax(logits, temperature), labels)
    return f"fitted on {split} ({n} faces, single view)"


def finish(out: Path, cfg: TrainConfig, held_out: dict[str, FaceSet], device: torch.device) -> None:
    """Logits of the best epoch on every held-out split and TTA mode (logits.npz), the temperature and unsure
    threshold fitted on the validation split and stored in best.pt, and the evaluation report of that split
    (<out>/report/)."""
    model, meta = load_checkpoint(out / "best.pt")
    model = model.to(device, memory_format=torch.channels_last)
    logits: dict[str, dict[str, np.ndarray]] = {}
    summary: dict[str, float | str] = {}
    for split, faces in held_out.items():
        logits[split] = {}
        for mode in TTA_MODES:
            views = tta_tensor(faces.images, mode, device, cfg.preprocess)
            logits[split][mode] = predict_logits(model, views, meta).cpu().numpy()
            summary[f"{split}_acc_{mode}"] = float((logits[split][mode].argmax(1) == faces.labels).mean())
    write_logits_npz(out / "logits.npz", meta["classes"],
                     {split: (logits[split], faces.labels) for split, faces in held_out.items()})

    # The Recognizer predicts one view by default: calibrated on the validation logits without TTA.
    split = next(iter(held_out))
    labels = held_out[split].labels
    calibration = calibrate(meta, logits[split]["none"], labels, split)
    ckpt = read_checkpoint(out / "best.pt")
    ckpt["meta"] = meta
    save_checkpoint(out / "best.pt", ckpt)
    fitted = calibration.startswith("fitted")
    evaluation_report(
        None, labels, meta["classes"], out / "report", title=f"{meta['name']} on {split} (TTA {cfg.eval_tta})",
        logits=logits[split][cfg.eval_tta], calibration_logits=logits[split]["none"],
        calibration_labels=labels, calibration_split=split, unsure_threshold=meta["unsure_threshold"],
        temperature=None if fitted else meta["temperature"], temperature_note="" if fitted else calibration,
        extra={"model": str(out / "best.pt"), "arch": meta["arch"], "split": split, "tta": cfg.eval_tta,
               "settings": str(out / "args.json")})

    summary |= {"temperature": meta["temperature"], "unsure_threshold": meta["unsure_threshold"],
                "calibration": calibration, "report": str(out / "report"),
                "next": f"ferkit export {out / 'best.pt'} --out {out / (meta['name'] + '.onnx')}"}
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    print("summary " + json.dumps(summary), flush=True)
    print(f"calibration: {calibration}\nnext: {summary['next']}   (then: ferkit predict --model "
          f"{out / (meta['name'] + '.onnx')} photo.jpg)", flush=True)


if __name__ == "__main__":  # torchrun ... -m ferkit.train: errors read as they do through `ferkit train`
    from .cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
