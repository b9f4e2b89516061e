"""Weighted mean of teacher files (``ferkit ensemble`` outputs): the next rung's teacher from two rungs' ensembles.

    python scripts/mix_teachers.py docs/results/ladder/teacher_gen1.npz:0.2 docs/results/ladder/teacher_g5.npz:0.8 \
        --out .gpudata/teacher_g1g5.npz

Choose the weights on PublicTest (the script prints every split's accuracy for the weights given, and with
``--sweep`` PublicTest's for the first file's weight from 0 to 1 in two-file mixes); PrivateTest is only reported.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from ferkit.ensemble import write_ensemble_file
from ferkit.errors import FerkitError

SPLITS = ("Training", "PublicTest", "PrivateTest")


def read_teacher(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def mixed(teachers: list[dict], weights: list[float], names: list[str]) -> dict[str, np.ndarray]:
    """The weighted mean of the teachers' probabilities; rows, labels and classes must agree."""
    first = teachers[0]
    for name, t in zip(names[1:], teachers[1:]):
        for key in ("classes", *(f"{s}_rows" for s in SPLITS), *(f"{s}_labels" for s in SPLITS)):
            if not np.array_equal(t[key], first[key]):
                raise FerkitError(f"{name}: its {key} differ from {names[0]}'s: not the same faces")
    total = sum(weights)
    arrays = {k: first[k] for k in first if not k.endswith("_probs")}
    for s in SPLITS:
        arrays[f"{s}_probs"] = sum(w * t[f"{s}_probs"] for w, t in zip(weights, teachers)).astype(np.float32) / total
    arrays["members"] = np.array(json.dumps([{"file": n, "weight": w, "members": json.loads(str(t["members"]))}
                                             for n, w, t in zip(names, weights, teachers)]))
    arrays["temperatures"] = np.array(json.dumps([json.loads(str(t["temperatures"])) for t in teachers]))
    return arrays


def accuracy(arrays: dict, split: str) -> float:
    return float((arrays[f"{split}_probs"].argmax(1) == arrays[f"{split}_labels"]).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("teachers", nargs="+", help="FILE:WEIGHT (weight default 1)")
    p.add_argument("--out", default=None, help="the mixed teacher file to write (default: none, only the table)")
    p.add_argument("--sweep", action="store_true", help="print PublicTest accuracy over the first file's weight "
                   "in a two-file mix (default: off)")
    args = p.parse_args()
    names = [t.rsplit(":", 1)[0] if ":" in t else t for t in args.teachers]
    weights = [float(t.rsplit(":", 1)[1]) if ":" in t else 1.0 for t in args.teachers]
    teachers = [read_teacher(n) for n in names]
    if args.sweep and len(teachers) == 2:
        for w in np.linspace(0, 1, 11):
            sweep = mixed(teachers, [w, 1 - w], names)
            print(f"{names[0]} weight {w:.1f}: PublicTest {accuracy(sweep, 'PublicTest'):.2%}")
    arrays = mixed(teachers, weights, names)
    print(" | ".join(f"{s} {accuracy(arrays, s):.2%}" for s in SPLITS))
    if args.out:
        print(f"wrote {write_ensemble_file(args.out, arrays)}")


if __name__ == "__main__":
    main()
