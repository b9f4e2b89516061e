"""Train a facial-expression model. Read it top to bottom: settings, data, model, loop, results.

Data and augmentation live on the device (the whole FER2013 training split is 66 MB of uint8),
so no loader process is ever on the critical path; the forward/backward pass runs in bfloat16
autocast on a GPU. The best epoch is chosen on PublicTest; PrivateTest is only ever reported.

    ferkit train --arch vgg --out runs/vgg                     # the default recipe
    ferkit train --arch seed_cnn --recipe seed --out runs/seed # the original report's recipe
    ferkit train --from default --data-folder my_faces/ --out runs/mine   # fine-tune on your images
    torchrun --nproc_per_node=2 -m ferkit.train --arch vgg ... # data-parallel on 2 GPUs (DDP)

Interrupted runs resume from ``<out>/last.pt`` (written atomically after every epoch). At the end,
``best.pt`` gets the temperature fitted on the validation split (PublicTest, or the held-out part of
--data-folder), ``<out>/report/`` the evaluation of that split and ``logits.npz`` the logits of
every held-out split and TTA mode (for ``ferkit evaluate --probs``). ``ferkit export <out>/best.pt``
turns the model into the ONNX file ``ferkit.load`` reads.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .augment import NO_AUGMENT, AugmentConfig, augment_batch, mix_batch
from .calibration import fit_temperature
from .data import FaceSet, ferplus_votes_as_fer2013, load_ferplus_split, load_split, read_ferplus_votes
from .errors import DataError, FerkitError, ModelError
from .evaluate import evaluation_report
from .export import default_meta, load_checkpoint
from .faces import load_face_folder
from .fileio import atomic_path, write_text
from .labels import EMOTIONS, FERPLUS_EMOTIONS
from .models import InputConfig, count_params, create_model, list_models
from .settings import data_dir
from .tta import TTA_MODES, tta_views

# Settings each recipe fills in where the command line leaves them unset.
RECIPES: dict[str, dict] = {
    # The report: Keras CNN, batch 64, 50 epochs, Adam, ReduceLROnPlateau, its four augmentations.
    "seed": dict(epochs=50, batch_size=64, opt="adam", lr=1e-3, weight_decay=0.0, sched="plateau",
                 warmup_epochs=0, label_smoothing=0.0, mixup_alpha=0.0, aug="report", balance="none"),
    # Ours: SGD + Nesterov, warm-up then cosine, label smoothing, full augmentation with mixup/cutmix.
    "default": dict(epochs=80, batch_size=128, opt="sgd", lr=0.05, weight_decay=5e-4, sched="cosine",
                    warmup_epochs=3, label_smoothing=0.1, mixup_alpha=0.2, aug="default", balance="none"),
    # Fine-tuning a shipped model on a user's small folder of faces.
    "finetune": dict(epochs=30, batch_size=64, opt="adamw", lr=3e-4, weight_decay=1e-4, sched="cosine",
                     warmup_epochs=1, label_smoothing=0.1, mixup_alpha=0.0, aug="default", balance="loss"),
}
DEFAULT_ARCH = "vgg"
UNSURE_THRESHOLD = 0.4  # stored in new models; a fine-tuned model keeps its parent's
# What a fine-tuned model inherits from the checkpoint it starts from: how its faces are framed and scaled.
INHERITED_META = ("input_size", "channels", "mean", "std", "face_margin", "unsure_threshold")
AUGMENTS = {
    "none": NO_AUGMENT,
    "report": AugmentConfig(rotate=15, zoom=0.15, shift=0.0, flip=True, brightness=0.2, contrast=0.0, erase=0.0),
    "default": AugmentConfig(),
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("ferkit train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=None, choices=list_models(),
                   help=f"model architecture (default: {DEFAULT_ARCH}, or the --from checkpoint's)")
    p.add_argument("--recipe", default=None, choices=sorted(RECIPES),
                   help="preset of the settings below: 'seed' (report), 'default', 'finetune' "
                        "(default: 'finetune' with --from, else 'default')")
    p.add_argument("--dataset", default="fer2013", choices=["fer2013", "ferplus"], help="(default: fer2013)")
    p.add_argument("--targets", default="hard", choices=["hard", "soft"],
                   help="hard: one label per face; soft: FER+ vote distributions (ferplus, or fer2013 with "
                        "votes mapped to 7 classes); evaluation always uses the split's hard labels (default: hard)")
    p.add_argument("--data", default=None, help="FER2013 folder (default: $FERKIT_DATA or ../shared/data/fer2013)")
    p.add_argument("--data-folder", default=None, help="your own labelled images: DIR/<class>/*.jpg (fine-tuning)")
    p.add_argument("--from", dest="init_from", default=None,
                   help="start from a checkpoint: a .pt path or a bundled model name ('default', 'ferplus')")
    p.add_argument("--report-splits", nargs="+", default=["PublicTest", "PrivateTest"],
                   choices=["PublicTest", "PrivateTest"],
                   help="splits whose logits are saved at the end (PublicTest is always the validation split)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out part of --data-folder (default: 0.2)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size, split across ranks")
    p.add_argument("--opt", default=None, choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--sched", default=None, choices=["cosine", "plateau"])
    p.add_argument("--warmup-epochs", type=int, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--mixup-alpha", type=float, default=None, help="mixup/cutmix Beta(a, a); 0 disables")
    p.add_argument("--aug", default=None, choices=sorted(AUGMENTS))
    p.add_argument("--balance", default=None, choices=["none", "loss", "sampler"],
                   help="class imbalance: none, loss weights or a sampler, both ~ 1/sqrt(class frequency)")
    p.add_argument("--preprocess", default=None, choices=["none", "report"],
                   help="train on raw faces or on the report's blur/sharpen/denoise output "
                        "(default: none, or the --from checkpoint's)")
    p.add_argument("--distill", nargs="+", default=None, metavar="CKPT", help="teacher checkpoints (ensemble)")
    p.add_argument("--distill-weight", type=float, default=0.7, help="share of the distillation loss (default: 0.7)")
    p.add_argument("--distill-temp", type=float, default=2.0, help="distillation temperature (default: 2.0)")
    p.add_argument("--eval-tta", default="flip", choices=["none", "flip", "crops"],
                   help="TTA for choosing the best epoch on the validation split (default: flip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset", type=int, default=None, help="use only N training and N validation faces (smoke tests)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="fit the run into this wall time: after 2 epochs, lower --epochs (and the cosine "
                        "schedule with it) to what the measured epoch time allows; the final value is logged")
    p.add_argument("--no-resume", action="store_true", help="start afresh even when <out>/last.pt exists")
    p.add_argument("--name", default=None, help="model name stored in the checkpoint (default: the out folder's name)")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    return p


def resolve_settings(args: argparse.Namespace, parent: dict | None = None) -> argparse.Namespace:
    """Fill unset options from the recipe and from ``parent``, the metadata of the --from checkpoint.

    The result is saved as <out>/args.json.
    """
    recipe = args.recipe or ("finetune" if args.init_from else "default")
    args.recipe = recipe
    for key, value in RECIPES[recipe].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if parent:
        if args.arch not in (None, parent["arch"]):
            raise FerkitError(f"--arch {args.arch} differs from the architecture of --from {args.init_from} "
                              f"({parent['arch']}): leave --arch out when fine-tuning")
        args.arch = parent["arch"]
        args.preprocess = args.preprocess or parent["preprocess"]
    args.arch = args.arch or DEFAULT_ARCH
    args.preprocess = args.preprocess or "none"
    args.name = args.name or Path(args.out).name
    return args


# --- distributed helpers (a no-op on one device) ----------------------------------------------


def setup_distributed(requested: str | None) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun, one process per GPU (NCCL) or per CPU rank (gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = torch.cuda.is_available() and (requested is None or requested.startswith("cuda"))
    if world == 1:
        return 0, 1, torch.device(requested or ("cuda" if want_cuda else "cpu"))
    local_rank = int(os.environ["LOCAL_RANK"])
    if want_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if want_cuda else "gloo")
    return dist.get_rank(), world, device


def all_reduce_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# --- data ------------------------------------------------------------------------------------


def load_data(args, meta: dict) -> tuple[FaceSet, np.ndarray, dict[str, FaceSet]]:
    """(train faces, train targets (N, C) soft, held-out splits); the first held-out split is the validation split.

    A user's photos (--data-folder) are cropped as at inference, at ``meta``'s input size and face margin.
    """
    if args.data_folder:
        faces = load_face_folder(args.data_folder, size=meta["input_size"], margin=meta["face_margin"])
        if len(faces.classes) < 2:
            raise DataError(f"{args.data_folder} has one class folder ({faces.classes[0]}): a model needs two or more")
        train, val = stratified_split(faces, args.val_fraction, args.seed)
        return train, one_hot(train.labels, len(faces.classes)), {"validation": val}
    root = data_dir(args.data)
    held_out = ("PublicTest", *args.report_splits)
    if args.dataset == "ferplus":
        train = load_ferplus_split("Training", root)
        votes = train.votes / train.votes.sum(axis=1, keepdims=True)
        targets = votes if args.targets == "soft" else one_hot(train.labels, len(FERPLUS_EMOTIONS))
        return train, targets.astype(np.float32), {s: load_ferplus_split(s, root) for s in held_out}
    train = load_split("Training", root)
    targets = one_hot(train.labels, len(EMOTIONS))
    if args.targets == "soft":
        # FER+ votes for the same images, mapped onto FER2013's 7 classes; rows without votes keep their label.
        votes, _, _ = read_ferplus_votes(root / "fer2013new.csv")
        mapped = ferplus_votes_as_fer2013(votes[train.rows])
        has_votes = votes[train.rows][:, : len(EMOTIONS)].sum(axis=1) > 0
        targets = np.where(has_votes[:, None], mapped, targets).astype(np.float32)
    return train, targets, {s: load_split(s, root) for s in held_out}


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


def faces_to_device(faces: np.ndarray, device: torch.device, preprocess: str) -> torch.Tensor:
    """(N, 48, 48) uint8 -> (N, 1, 48, 48) uint8 on the device, after the report's steps when asked."""
    if preprocess == "report":
        from concurrent.futures import ThreadPoolExecutor

        from .preprocess import apply_report_preprocessing

        with ThreadPoolExecutor() as pool:  # OpenCV releases the GIL
            faces = np.stack(list(pool.map(apply_report_preprocessing, faces, chunksize=256)))
    return torch.from_numpy(np.ascontiguousarray(faces)).unsqueeze(1).to(device)


def normalise(x_uint8_or_unit: torch.Tensor, cfg: InputConfig) -> torch.Tensor:
    x = x_uint8_or_unit.float()
    if x_uint8_or_unit.dtype == torch.uint8:
        x = x / 255.0
    return (x - cfg.mean) / cfg.std


# --- model, optimiser, schedule ----------------------------------------------------------------


def input_config(meta: dict) -> InputConfig:
    return InputConfig(meta["input_size"], meta["channels"], meta["mean"], meta["std"])


def run_meta(args, parent: dict | None) -> dict:
    """The metadata stored in the checkpoints (docs/design.md); classes are set once the data is read."""
    inherited = {k: parent[k] for k in INHERITED_META} if parent else {"unsure_threshold": UNSURE_THRESHOLD}
    return default_meta(args.arch, name=args.name, preprocess=args.preprocess, **inherited)


def build_model(args, classes: tuple[str, ...], parent: tuple[torch.nn.Module, dict] | None) -> torch.nn.Module:
    """A new model, or the --from checkpoint's with a last layer for ``classes`` when they differ from its own."""
    if parent is None:
        return create_model(args.arch, num_classes=len(classes))
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


def build_optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if args.opt == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    if args.opt == "adam":
        return torch.optim.Adam(groups, lr=args.lr)
    return torch.optim.AdamW(groups, lr=args.lr)


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


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.softmax(teacher.float() / t, 1),
                    reduction="batchmean") * t * t


# --- one epoch, evaluation --------------------------------------------------------------------


def train_one_epoch(model, teachers, optimizer, images, targets, sample_p, weights, args, cfg, epoch, state,
                    device, rank, world, generator) -> dict:
    model.train()
    n = images.shape[0]
    per_rank = args.batch_size // world
    steps = max(1, n // args.batch_size)
    # Every rank draws the same global order, then takes its own slice of each global batch.
    g = torch.Generator(device="cpu").manual_seed(args.seed * 1000 + epoch)
    order = (torch.multinomial(sample_p, n, replacement=True, generator=g) if sample_p is not None
             else torch.randperm(n, generator=g)).to(device)
    aug_cfg = AUGMENTS[args.aug]
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    count = 0
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False,
               disable=rank != 0 or not sys.stderr.isatty())
    for step in bar:
        if args.sched == "cosine":
            lr = cosine_lr(state["step"], state["total_steps"], state["warmup_steps"], args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
        start = step * args.batch_size + rank * per_rank
        idx = order[start:start + per_rank]
        x = augment_batch(images[idx].float() / 255.0, aug_cfg, generator)
        x = normalise(x, cfg).contiguous(memory_format=torch.channels_last)
        hard = targets[idx]
        y = hard * (1 - args.label_smoothing) + args.label_smoothing / hard.shape[1]
        x, y = mix_batch(x, y, args.mixup_alpha, generator=generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
            loss = soft_cross_entropy(logits, y, weights)
            if teachers:
                with torch.no_grad():
                    teacher_logits = torch.stack([t(x).float() for t in teachers]).mean(0)
                kd = distillation_loss(logits, teacher_logits, args.distill_temp)
                loss = (1 - args.distill_weight) * loss + args.distill_weight * kd
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1
        loss_sum += loss.detach() * len(idx)  # accumulated on the device: no sync per step
        correct += (logits.argmax(1) == hard.argmax(1)).sum()
        count += len(idx)
    loss_total, correct_total, count_total = all_reduce_sum([loss_sum.item(), correct.item(), count], device, world)
    return {"train_loss": loss_total / count_total, "train_acc": correct_total / count_total}


@torch.no_grad()
def predict_logits(model, views: torch.Tensor, cfg: InputConfig, batch: int = 1024) -> torch.Tensor:
    """Mean logits over TTA views: views (V, N, 1, S, S) uint8 -> (N, C) float32."""
    model.eval()
    out = []
    for v in views:
        chunks = []
        for i in range(0, v.shape[0], batch):
            x = normalise(v[i:i + batch], cfg).contiguous(memory_format=torch.channels_last)
            with torch.autocast(v.device.type, dtype=torch.bfloat16, enabled=v.device.type == "cuda"):
                chunks.append(model(x).float())
        out.append(torch.cat(chunks))
    return torch.stack(out).mean(0)


def tta_tensor(faces: np.ndarray, mode: str, device, preprocess: str) -> torch.Tensor:
    """(V, N, 1, S, S) uint8 views on the device; the report's steps run once, before the views."""
    faces = faces_to_device(faces, "cpu", preprocess)[:, 0].numpy()
    return torch.stack([faces_to_device(v, device, "none") for v in tta_views(faces, mode)])


def evaluate(model, views: torch.Tensor, labels: torch.Tensor, cfg, device, rank, world) -> dict:
    """Accuracy and NLL on the validation views; each rank scores its shard, sums are reduced."""
    shard = slice(rank, None, world)
    logits = predict_logits(model, views[:, shard], cfg)
    y = labels[shard]
    sums = [F.cross_entropy(logits, y, reduction="sum").item(), (logits.argmax(1) == y).sum().item(), len(y)]
    nll, correct, count = all_reduce_sum(sums, device, world)
    return {"val_loss": nll / count, "val_acc": correct / count}


# --- checkpoints ------------------------------------------------------------------------------


def save_checkpoint(path: Path, model, optimizer, scheduler, epoch, best, args, meta, log) -> None:
    raw = model.module if hasattr(model, "module") else model
    raw = getattr(raw, "_orig_mod", raw)
    ckpt = {
        "model": raw.state_dict(), "arch": args.arch, "model_kwargs": {}, "meta": meta,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
        "epoch": epoch, "best_metric": best, "args": vars(args), "log": log,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


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


# --- main -------------------------------------------------------------------------------------


def fit_epochs_to_time_limit(args, state, epoch_seconds, epoch, elapsed, rank, world, device) -> None:
    """Lower args.epochs so that the run ends within --time-limit (all ranks agree on rank 0's answer)."""
    reserve = 0.15 * args.time_limit  # the final evaluation with TTA, and slack
    affordable = epoch + int((args.time_limit - reserve - elapsed) // max(epoch_seconds, 1e-3))
    epochs = torch.tensor([min(args.epochs, max(affordable, epoch + 1))], device=device)
    if world > 1:
        dist.broadcast(epochs, src=0)
    if int(epochs) < args.epochs:
        if rank == 0:
            print(f"time limit {args.time_limit:.0f} s at {epoch_seconds:.1f} s/epoch: "
                  f"{args.epochs} epochs -> {int(epochs)}", flush=True)
        args.epochs = int(epochs)
        state["total_steps"] = state["steps_per_epoch"] * args.epochs


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    parent = load_checkpoint(args.init_from) if args.init_from else None  # (model, meta), on the CPU
    args = resolve_settings(args, parent[1] if parent else None)
    rank, world, device = setup_distributed(args.device)
    if args.batch_size % world:
        raise FerkitError(f"--batch-size {args.batch_size} must divide evenly over {world} ranks")
    out = Path(args.out)
    torch.manual_seed(args.seed + rank)
    np.random.seed(args.seed)
    random.seed(args.seed)
    torch.backends.cudnn.benchmark = True

    # data: everything on the device, uint8
    meta = run_meta(args, parent[1] if parent else None)
    train, targets_np, held_out = load_data(args, meta)
    if args.subset:
        train = train.subset(np.arange(min(args.subset, len(train))))
        targets_np = targets_np[: len(train)]
        held_out = {k: v.subset(np.arange(min(args.subset, len(v)))) for k, v in held_out.items()}
    classes = train.classes
    meta["classes"] = list(classes)
    val_split, val = next(iter(held_out.items()))
    cfg = input_config(meta)
    images = faces_to_device(train.images, device, args.preprocess)
    targets = torch.from_numpy(targets_np).to(device)
    val_views = tta_tensor(val.images, args.eval_tta, device, args.preprocess)
    val_labels = torch.from_numpy(val.labels).to(device)
    w = class_weights(train.labels, len(classes))
    weights = torch.from_numpy(w).to(device) if args.balance == "loss" else None
    sample_p = torch.from_numpy(w[train.labels].astype(np.float64)) if args.balance == "sampler" else None

    # model
    model = build_model(args, classes, parent).to(device, memory_format=torch.channels_last)
    teachers = [load_checkpoint(p)[0].to(device, memory_format=torch.channels_last) for p in args.distill or []]
    optimizer = build_optimizer(model, args)
    scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3, min_lr=1e-6)
                 if args.sched == "plateau" else None)

    # resume
    start_epoch, best, log = 0, -1.0, []
    steps_per_epoch = max(1, len(train) // args.batch_size)
    state = {"step": 0, "steps_per_epoch": steps_per_epoch, "total_steps": steps_per_epoch * args.epochs,
             "warmup_steps": steps_per_epoch * args.warmup_epochs}
    if (out / "last.pt").is_file() and not args.no_resume:
        ckpt = torch.load(out / "last.pt", map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler and ckpt["scheduler"]:
            scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best, log = ckpt["epoch"] + 1, ckpt["best_metric"], ckpt["log"]
        state["step"] = start_epoch * steps_per_epoch
        if rank == 0:
            print(f"resuming {out / 'last.pt'} at epoch {start_epoch + 1}", flush=True)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model,
                                                          device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    generator = torch.Generator(device=device).manual_seed(args.seed * 7919 + rank + 104729 * start_epoch)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "args.json", json.dumps(vars(args), indent=1))
        print(f"{args.arch}: {count_params(model):,} parameters | train {len(train)} faces, {val_split} {len(val)} | "
              f"{args.recipe} recipe, {args.epochs} epochs, batch {args.batch_size} on {world} x {device.type}", flush=True)

    started = time.time()
    epoch = start_epoch
    while epoch < args.epochs:  # a while loop: --time-limit may lower args.epochs on the way
        t0 = time.time()
        if args.time_limit and epoch == start_epoch + 2:
            fit_epochs_to_time_limit(args, state, log[-1]["seconds"], epoch, time.time() - started, rank, world, device)
        stats = train_one_epoch(model, teachers, optimizer, images, targets, sample_p, weights, args, cfg, epoch,
                                state, device, rank, world, generator)
        stats |= evaluate(model, val_views, val_labels, cfg, device, rank, world)
        if scheduler:
            scheduler.step(stats["val_loss"])
        row = {"epoch": epoch + 1, **{k: round(v, 5) for k, v in stats.items()},
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
        log.append(row)
        if rank == 0:
            improved = stats["val_acc"] > best
            best = max(best, stats["val_acc"])
            if improved:
                save_checkpoint(out / "best.pt", model, optimizer, scheduler, epoch, best, args, meta, log)
            save_checkpoint(out / "last.pt", model, optimizer, scheduler, epoch, best, args, meta, log)
            write_log(out, log)
            print(" ".join(f"{k}={v}" for k, v in row.items()) + (" *" if improved else ""), flush=True)
        epoch += 1

    if rank == 0:
        write_text(out / "args.json", json.dumps(vars(args), indent=1))  # with the epochs actually run
        plot_curves(out, log, val_split)
        finish(out, args, held_out, device)
    if world > 1:
        dist.destroy_process_group()
    return 0


def finish(out: Path, args, held_out: dict[str, FaceSet], device: torch.device) -> None:
    """Logits of the best epoch on every held-out split and TTA mode (logits.npz), the evaluation report of the
    validation split (<out>/report/) and the temperature fitted on it, stored in best.pt."""
    model, meta = load_checkpoint(out / "best.pt")
    model = model.to(device, memory_format=torch.channels_last)
    cfg = input_config(meta)
    arrays: dict[str, np.ndarray] = {"classes": np.array(meta["classes"])}
    summary: dict[str, float | str] = {}
    for split, faces in held_out.items():
        arrays[f"{split}_labels"] = faces.labels
        for mode in TTA_MODES:
            logits = predict_logits(model, tta_tensor(faces.images, mode, device, args.preprocess), cfg).cpu().numpy()
            arrays[f"{split}_logits_{mode}"] = logits
            summary[f"{split}_acc_{mode}"] = float((logits.argmax(1) == faces.labels).mean())
    with atomic_path(out / "logits.npz") as tmp:
        np.savez_compressed(tmp, **arrays)

    # Calibrated on the validation split itself: the only held-out faces a --data-folder run has.
    split = next(iter(held_out))
    logits, labels = arrays[f"{split}_logits_{args.eval_tta}"], arrays[f"{split}_labels"]
    evaluation_report(
        None, labels, meta["classes"], out / "report", title=f"{meta['name']} on {split} (TTA {args.eval_tta})",
        logits=logits, calibration_logits=logits, calibration_labels=labels, calibration_split=split,
        extra={"model": str(out / "best.pt"), "arch": meta["arch"], "split": split, "tta": args.eval_tta,
               "settings": str(out / "args.json")})
    # The Recognizer predicts one view by default: its temperature is fitted on the logits without TTA.
    meta["temperature"] = fit_temperature(arrays[f"{split}_logits_none"], labels)
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    ckpt["meta"] = meta
    with atomic_path(out / "best.pt") as tmp:
        torch.save(ckpt, tmp)

    summary |= {"temperature": meta["temperature"], "report": str(out / "report")}
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    print("summary " + json.dumps(summary), flush=True)


if __name__ == "__main__":  # torchrun ... -m ferkit.train: errors read as they do through `ferkit train`
    from .cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
