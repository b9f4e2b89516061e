"""Average several trained models into one set of probabilities: the teacher file of offline distillation.

    ferkit ensemble runs/g1_* --out runs/teacher.npz                 # flip TTA, all three splits
    ferkit ensemble runs/a/best.pt runs/b/best.pt --tta crops --splits PublicTest PrivateTest --out ens.npz
    ferkit train --arch vgg --teacher-probs runs/teacher.npz --out runs/student   # learn from it

Each member (a run folder, its best.pt / weights.pt, or a bundled model's name) scores every face of
the asked splits with the TTA views, its probabilities are calibrated by a temperature fitted on
PublicTest (never on PrivateTest), and the members' probabilities are averaged with equal weights.
The file (.npz) holds ``classes``, ``members`` and ``temperatures`` (JSON), ``tta``, and per split
``<split>_probs`` (N, C), ``<split>_rows`` (fer2013.csv rows) and ``<split>_labels``. Only this file
passes from one stage of the training ladder to the next (a few hundred KB for Training).
Needs torch (ferkit[train]); a GPU when available.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .calibration import fit_temperature, softmax
from .data import FaceSet, load_ferplus_split, load_split
from .errors import DataError, FerkitError, require_training_extra
from .fileio import atomic_open, read_npz
from .labels import EMOTIONS, FERPLUS_EMOTIONS, SPLITS
from .tta import TTA_MODES
from .weights import RUN_CHECKPOINTS

try:  # the training extra: reading an ensemble file needs only numpy, making one needs torch
    import torch

    from .checkpoint import load_checkpoint
    from .torch_infer import face_logits
    MISSING = None
except ImportError as e:
    MISSING = e

CALIBRATION_SPLIT = "PublicTest"
REQUIRED_KEYS = ("classes", "members", "tta")


def member_checkpoint(member: str) -> str:
    """A run folder -> its best.pt (or packed weights.pt); a file or bundled name is returned as it is."""
    path = Path(member)
    if path.is_dir():
        for name in RUN_CHECKPOINTS:
            if (path / name).is_file():
                return str(path / name)
        raise FerkitError(f"{path} holds no {' or '.join(RUN_CHECKPOINTS)}: is it a ferkit train run folder?")
    return member


def load_faces(split: str, classes: tuple[str, ...], data: str | None) -> FaceSet:
    """The split with the labels of the members' class set: FER2013 (7 classes) or FER+ (8)."""
    if classes == EMOTIONS:
        return load_split(split, data)
    if classes == FERPLUS_EMOTIONS:
        return load_ferplus_split(split, data)
    raise DataError(f"the members' classes {list(classes)} are neither FER2013's nor FER+'s: "
                    "ensembles are built on those datasets")


def ensemble_probabilities(members: list[str], splits: list[str], tta: str, data: str | None,
                           device: torch.device) -> dict:
    """The arrays of the ensemble file (module docstring), and a per-member accuracy table under ``table``."""
    models = [(m, *load_checkpoint(member_checkpoint(m))) for m in members]
    classes = tuple(models[0][2]["classes"])
    for name, _, meta in models:
        if tuple(meta["classes"]) != classes:
            raise FerkitError(f"{name} predicts {meta['classes']}, {members[0]} predicts {list(classes)}: "
                              "members must share one class list")
    faces = {s: load_faces(s, classes, data) for s in SPLITS if s in (CALIBRATION_SPLIT, *splits)}
    arrays: dict[str, np.ndarray] = {}
    table: dict[str, dict[str, float]] = {}
    temperatures: dict[str, float] = {}
    summed = {s: np.zeros((len(faces[s]), len(classes))) for s in splits}
    for name, model, meta in models:
        logits = {s: face_logits(model, f.images, meta, tta, device) for s, f in faces.items()}
        t = fit_temperature(logits[CALIBRATION_SPLIT], faces[CALIBRATION_SPLIT].labels)
        temperatures[name] = t
        table[name] = {s: float((logits[s].argmax(1) == faces[s].labels).mean()) for s in faces}
        for s in splits:
            summed[s] += softmax(logits[s], t)
    for s in splits:
        probs = summed[s] / len(models)
        arrays[f"{s}_probs"] = probs.astype(np.float32)
        arrays[f"{s}_rows"] = faces[s].rows
        arrays[f"{s}_labels"] = faces[s].labels
    table["ensemble"] = {s: float((arrays[f"{s}_probs"].argmax(1) == faces[s].labels).mean()) for s in splits}
    arrays |= {"classes": np.array(classes), "members": np.array(json.dumps(members)), "tta": np.array(tta),
               "temperatures": np.array(json.dumps(temperatures))}
    return arrays | {"table": table}


def write_ensemble_file(path: str | Path, arrays: dict) -> Path:
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **{k: v for k, v in arrays.items() if k != "table"})
    return Path(path)


def read_ensemble_file(path: str | Path) -> dict:
    """The arrays of an ensemble file, checked; DataError says what is missing or broken."""
    arrays = read_npz(path, "ensemble file", " (write it with `ferkit ensemble`)")
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{path} is not an ensemble file: it lacks {', '.join(missing)}")
    arrays["classes"] = tuple(str(c) for c in arrays["classes"])
    for key in [k for k in arrays if k.endswith("_probs")]:
        split = key[: -len("_probs")]
        probs, rows = arrays[key], arrays.get(f"{split}_rows")
        if rows is None or probs.ndim != 2 or probs.shape != (len(rows), len(arrays["classes"])):
            raise DataError(f"{path}: {key} does not match {split}_rows and classes")
    return arrays


def format_table(table: dict[str, dict[str, float]]) -> str:
    splits = list(next(iter(table.values())))
    lines = ["| member | " + " | ".join(splits) + " |", "| --- |" + " ---: |" * len(splits)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[s]:.2f} %" if s in row else "" for s in splits) + " |")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("ferkit ensemble", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("members", nargs="+",
                   help="run folders, .pt checkpoints or bundled model names; checkpoints are read with "
                        "weights_only=True, so a crafted file cannot run code")
    p.add_argument("--out", required=True, help="the ensemble file to write (.npz) (required; no default)")
    p.add_argument("--tta", default="flip", choices=TTA_MODES, help="test-time views per face (default: flip)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                   help="splits to write probabilities for (default: all three; Training is what a student needs)")
    p.add_argument("--data", default=None, help="FER2013 folder (default: $FERKIT_DATA or ../shared/data/fer2013)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    require_training_extra("ensemble", MISSING)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    arrays = ensemble_probabilities(args.members, args.splits, args.tta, args.data, device)
    out = write_ensemble_file(args.out, arrays)
    print(format_table(arrays["table"]))
    print(f"wrote {out}: {len(args.members)} members, TTA {args.tta}, splits {', '.join(args.splits)} "
          f"(temperatures fitted on {CALIBRATION_SPLIT})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
