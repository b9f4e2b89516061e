"""``ferkit train``'s settings: the recipes, the TrainConfig of a run and the command line that fills it.

No torch here, so that ``ferkit train --help`` works on the plain install; ferkit/train.py runs the config.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import FerkitError
from .tta import TTA_MODES

TRAIN_DOC = """Train a facial-expression model (needs torch: pip install 'ferkit[train]').

    ferkit train --arch vgg --out runs/vgg                     # the default recipe (+ the FER+ auxiliary head)
    ferkit train --arch seed_cnn --recipe seed --out runs/seed # the original report's recipe
    ferkit train --arch vgg --teacher-probs runs/teacher.npz --out runs/student   # distil a `ferkit ensemble`
    ferkit train --from default --data-folder my_faces/ --out runs/mine   # fine-tune on your images
    torchrun --nproc_per_node=2 -m ferkit.train --arch vgg ... # data-parallel on 2 GPUs (DDP)

Interrupted runs resume from <out>/last.pt; a second run into the same --out is refused. At the end,
best.pt holds the temperature and unsure threshold fitted on the validation split, <out>/report/ its
evaluation, logits.npz the logits of every held-out split; then: ferkit export <out>/best.pt --out m.onnx
"""

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
UNSURE_THRESHOLD = 0.4  # until finish() fits one (calibration.UNSURE_RULE); a fine-tuned model starts from its parent's
AUX_WEIGHT = 0.5  # weight of the auxiliary FER+ head's loss


@dataclass
class TrainConfig:
    """Every setting of a run, saved as <out>/args.json; a recipe presets the optimisation fields."""

    arch: str = DEFAULT_ARCH
    recipe: str = "default"
    dataset: str = "fer2013"
    targets: str = "hard"
    data: str | None = None
    data_folder: str | None = None
    init_from: str | None = None
    report_splits: list[str] = field(default_factory=lambda: ["PublicTest", "PrivateTest"])
    val_fraction: float = 0.2
    epochs: int = 80
    batch_size: int = 128
    opt: str = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    sched: str = "cosine"
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.2
    aug: str = "default"
    balance: str = "none"
    preprocess: str = "none"
    aux_ferplus: str = "auto"
    aux_weight: float = AUX_WEIGHT
    distill: list[str] | None = None
    teacher_probs: str | None = None
    distill_weight: float = 0.7
    distill_temp: float = 2.0
    eval_tta: str = "flip"
    seed: int = 0
    subset: int | None = None
    device: str | None = None
    compile: bool = False
    compile_mode: str = "default"
    time_limit: float | None = None
    no_resume: bool = False
    name: str | None = None
    out: str = "runs/train"


def torch_choices() -> tuple[list[str] | None, list[str] | None]:
    """(architectures, augmentation presets) when torch is installed; (None, None) without it, so that
    ``ferkit train --help`` still works on the plain install."""
    try:
        from .augment import AUGMENTS
        from .models import list_models
    except ImportError:
        return None, None
    return list_models(), sorted(AUGMENTS)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("ferkit train", description=TRAIN_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    archs, augments = torch_choices()
    add_data_args(p, archs)
    add_recipe_args(p, augments)
    add_teacher_args(p)
    add_run_args(p)
    return p


def add_data_args(p: argparse.ArgumentParser, archs: list[str] | None) -> None:
    """What to train and on which data."""
    p.add_argument("--arch", default=None, choices=archs,
                   help=f"model architecture (default: {DEFAULT_ARCH}, or the --from checkpoint's)"
                        + ("" if archs else "; the list needs torch: pip install 'ferkit[train]'"))
    p.add_argument("--recipe", default=None, choices=sorted(RECIPES),
                   help="preset of the optimisation settings below: 'seed' (report), 'default', 'finetune' "
                        "(default: 'finetune' with --from, else 'default')")
    p.add_argument("--dataset", default="fer2013", choices=["fer2013", "ferplus"], help="(default: fer2013)")
    p.add_argument("--targets", default="hard", choices=["hard", "soft"],
                   help="hard: one label per face; soft: FER+ vote distributions (ferplus, or fer2013 with "
                        "votes mapped to 7 classes); evaluation always uses the split's hard labels (default: hard)")
    p.add_argument("--data", default=None, help="FER2013 folder (default: $FERKIT_DATA or ../shared/data/fer2013)")
    p.add_argument("--data-folder", default=None,
                   help="your own labelled images: DIR/<class>/*.jpg, for fine-tuning (default: none)")
    p.add_argument("--from", dest="init_from", default=None,
                   help="start from a checkpoint: a .pt path or a bundled model name ('default', 'fast', 'ferplus'; "
                        "a bundled ensemble starts from its first member, one network); read with "
                        "weights_only=True, so a crafted file cannot run code (default: none)")
    p.add_argument("--report-splits", nargs="+", default=["PublicTest", "PrivateTest"],
                   choices=["PublicTest", "PrivateTest"],
                   help="splits whose logits are saved at the end; PublicTest is always the validation split "
                        "(default: PublicTest PrivateTest)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out part of --data-folder (default: 0.2)")


def add_recipe_args(p: argparse.ArgumentParser, augments: list[str] | None) -> None:
    """The optimisation settings a recipe presets (None: the recipe's value)."""
    recipe = RECIPES["default"]
    p.add_argument("--epochs", type=int, default=None, help=f"(default: the recipe's; {recipe['epochs']} for default)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"global batch size, split across ranks (default: the recipe's; {recipe['batch_size']})")
    p.add_argument("--opt", default=None, choices=["sgd", "adam", "adamw"],
                   help=f"optimiser (default: the recipe's; {recipe['opt']})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default: the recipe's; {recipe['lr']})")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"on weights, not on BN and biases (default: the recipe's; {recipe['weight_decay']})")
    p.add_argument("--sched", default=None, choices=["cosine", "plateau"],
                   help=f"learning-rate schedule (default: the recipe's; {recipe['sched']})")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help=f"linear warm-up before the cosine (default: the recipe's; {recipe['warmup_epochs']})")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help=f"(default: the recipe's; {recipe['label_smoothing']})")
    p.add_argument("--mixup-alpha", type=float, default=None,
                   help=f"mixup/cutmix Beta(a, a); 0 disables (default: the recipe's; {recipe['mixup_alpha']})")
    p.add_argument("--aug", default=None, choices=augments,
                   help=f"augmentation preset (augment.py) (default: the recipe's; {recipe['aug']})")
    p.add_argument("--balance", default=None, choices=["none", "loss", "sampler"],
                   help="class imbalance: none, loss weights or a sampler, both ~ 1/sqrt(class frequency) "
                        f"(default: the recipe's; {recipe['balance']})")
    p.add_argument("--preprocess", default=None, choices=["none", "report"],
                   help="train on raw faces or on the report's blur/sharpen/denoise output "
                        "(default: none, or the --from checkpoint's)")


def add_teacher_args(p: argparse.ArgumentParser) -> None:
    """The FER+ auxiliary head and distillation."""
    p.add_argument("--aux-ferplus", default="auto", choices=["auto", "on", "off"],
                   help="a second head trained on the FER+ vote distributions of the same training faces "
                        "(rows without votes masked out); only the FER2013 head is used and scored. "
                        "auto: on for --dataset fer2013 when fer2013new.csv is present (default: auto)")
    p.add_argument("--aux-weight", type=float, default=AUX_WEIGHT,
                   help=f"weight of the FER+ head's loss (default: {AUX_WEIGHT})")
    p.add_argument("--distill", nargs="+", default=None, metavar="CKPT",
                   help="online distillation: teacher checkpoints run on every batch, logits averaged; read with "
                        "weights_only=True, so a crafted file cannot run code (default: none)")
    p.add_argument("--teacher-probs", default=None, metavar="FILE",
                   help="offline distillation: the Training_probs of a file written by `ferkit ensemble` "
                        "(default: none)")
    p.add_argument("--distill-weight", type=float, default=0.7, help="share of the distillation loss (default: 0.7)")
    p.add_argument("--distill-temp", type=float, default=2.0, help="distillation temperature (default: 2.0)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Selection, devices, time and the output folder."""
    p.add_argument("--eval-tta", default="flip", choices=list(TTA_MODES),
                   help="TTA for choosing the best epoch on the validation split (default: flip)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--subset", type=int, default=None,
                   help="use only N training and N validation faces, for smoke tests (default: all)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (default: off)")
    p.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile mode with --compile; reduce-overhead replays CUDA graphs (default: default)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="fit the run into this wall time: from the third epoch on, lower --epochs (and the "
                        "cosine schedule with it) to what the measured epoch time allows; the final value is "
                        "logged (default: none)")
    p.add_argument("--no-resume", action="store_true",
                   help="start afresh even when <out>/last.pt exists (default: off)")
    p.add_argument("--name", default=None, help="model name stored in the checkpoint (default: the out folder's name)")
    p.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    return p



def resolve_settings(args: argparse.Namespace, parent: dict | None = None) -> TrainConfig:
    """The run's TrainConfig: the command line, then the recipe, then ``parent`` (the --from checkpoint's meta)."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    recipe = given.get("recipe") or ("finetune" if given.get("init_from") else "default")
    settings = {**RECIPES[recipe], **given, "recipe": recipe}
    if parent:
        if settings.get("arch", parent["arch"]) != parent["arch"]:
            raise FerkitError(f"--arch {settings['arch']} differs from the architecture of --from {args.init_from} "
                              f"({parent['arch']}): leave --arch out when fine-tuning")
        settings["arch"] = parent["arch"]
        settings.setdefault("preprocess", parent["preprocess"])
    if settings.get("distill") and settings.get("teacher_probs"):
        raise FerkitError("--distill and --teacher-probs are two kinds of teacher: give one")
    cfg = TrainConfig(**settings)
    cfg.name = cfg.name or Path(cfg.out).name
    return cfg

