"""Accuracy of every trained model, chosen on PublicTest, reported on PrivateTest.

Two sources, printed as markdown tables and written to benchmarks/results/accuracy.json:

1. the logits that each GPU training run saved (docs/results/runs/<run>/logits.npz): every run and
   TTA mode, the best single model and the best ensemble, both chosen on PublicTest only;
2. the bundled ONNX models, re-scored here on the CPU from the committed weights (ONNX Runtime).

    python -m benchmarks.bench_accuracy            # everything (a few minutes on 2 cores)
    python -m benchmarks.bench_accuracy --no-onnx  # only the saved logits (seconds)
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from ferkit.calibration import fit_temperature, softmax
from ferkit.evaluate import choose_ensemble_weights, ensemble_probs
from ferkit.fileio import write_text
from ferkit.labels import FERPLUS_EMOTIONS
from ferkit.weights import MAX_BUNDLED_BYTES, read_manifest

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "docs" / "results" / "runs"
OUT = ROOT / "benchmarks" / "results" / "accuracy.json"
TTA_MODES = ("none", "flip", "crops")
VALIDATION, TEST = "PublicTest", "PrivateTest"
FAST_ARCHS = ("fastnet", "mobile", "mobile_deep")  # at or under fastnet's CPU cost per face (docs/benchmarks.md)
# within ~20x fastnet's CPU cost per face, the default tier's bound (resnet18 is 21.8x: docs/benchmarks.md)
DEFAULT_ARCHS = ("vgg", "seed_cnn", "fastnet_wide", *FAST_ARCHS)
# in int8 (scripts/ship_models.py --int8): resnet18 (11.3x) is within the default's bound too, fastnet_wide (0.7x)
# within the fast tier's, and so is a single-view graph of two int8 VGGs (2 x 7.1x) or of a VGG and a ResNet-18
# (18.4x); two ResNet-18s (22.7x) are not (docs/benchmarks.md, on a CPU without VNNI). vgg_deep has 1.73x vgg's
# multiply-adds (808 M against 468 M a face): beside a VGG (~19x there) it fits, beside a second vgg_deep or a
# ResNet-18 (~24x, ~23x) it does not
INT8_DEFAULT_ARCHS = (*DEFAULT_ARCHS, "resnet18", "vgg_deep")
INT8_FAST_ARCHS = (*FAST_ARCHS, "fastnet_wide", "fastnet_wider")
INT8_DEFAULT_PAIRS = {("vgg", "vgg"), ("resnet18", "vgg"), ("vgg", "vgg_deep")}
BEST_ARCHS, BEST_TTA = ("vgg", "resnet18", "vgg_deep"), "flip"  # the pool of the shipped `best` graphs, their TTA
# an int8 graph holds ~1 byte a parameter, plus its float scales, int32 biases and structure (best.onnx: 19.0 MB for
# 18.76 M parameters): members' parameters at most this (20,000,000) keep the file within MAX_BUNDLED_BYTES
BEST_MAX_PARAMS = MAX_BUNDLED_BYTES - 480_000


@dataclass(frozen=True)
class Ladder:
    """One dataset's runs of scripts/gpu/ladder.sh and how its tiers are chosen among them."""

    n_classes: int
    prefix: str                # its runs: g1_*, g2_*, ... on FER2013; fpg1_*, fpg2_* on FER+ (DATASET=ferplus)
    pools: dict[str, tuple[str, ...]]  # per tier: name prefixes of the runs whose weights were on disk when it shipped
    best_members: int          # the most picks (members) of its `best` graph; BEST_MAX_PARAMS caps their size

    def pool(self, runs: dict, tier: str) -> dict:
        return {name: z for name, z in runs.items() if name.startswith(self.pools[tier])}


TIERS = ("default", "fast", "best")
# Each tier's pool: the runs whose weights were on disk when it last shipped (runs/ is not committed, and a new
# checkout has lost the older runs' weights). FER2013: `default` on 3 December from the int8 stage's runs; `fast`
# and `best` on 4 December from the g15 archs call, `best` with g10_vgg_2 too (its weights are default.pt), its
# 4 picks the most VGGs that BEST_MAX_PARAMS holds. FER+: `ferplus_fast` on 3 December from the first FER+
# session's runs, `ferplus` that evening from the archs stage's, `ferplus_best` on 4 December from the fpg6 call's
# and fpg4_vgg_deep_0 (ferplus.pt), its 3 picks as PublicTest chose on 3 December (2, 3, 4, 6 members: 88.13,
# 88.34, 88.31, 88.31 %)
LADDERS = {"fer2013": Ladder(7, "g", {"default": ("g9_", "g10_", "g11_"), "fast": ("g15_",),
                                      "best": ("g10_vgg_2", "g15_")}, 4),
           "ferplus": Ladder(8, "fpg", {"default": ("fpg3_", "fpg4_", "fpg5_"), "fast": ("fpg1_", "fpg2_"),
                                        "best": ("fpg4_vgg_deep_0", "fpg6_")}, 3)}


def load_runs() -> dict[str, dict[str, np.ndarray]]:
    """Each run's saved logits, plus its architecture (from args.json) under ``arch``."""
    runs = {}
    for path in sorted(RUNS.glob("*/logits.npz")):
        with np.load(path) as z:
            if f"{VALIDATION}_labels" in z:
                runs[path.parent.name] = {k: z[k] for k in z.files}
                runs[path.parent.name]["arch"] = json.loads((path.parent / "args.json").read_text())["arch"]
    return runs


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def run_table(runs: dict) -> list[dict]:
    """One row per (run, TTA mode); PrivateTest is None for runs that saved only PublicTest."""
    rows = []
    for name, z in runs.items():
        for tta in TTA_MODES:
            if f"{VALIDATION}_logits_{tta}" in z:
                test = f"{TEST}_logits_{tta}"
                rows.append({"run": name, "arch": str(z["arch"]), "classes": len(z["classes"]), "tta": tta,
                             VALIDATION: accuracy(z[f"{VALIDATION}_logits_{tta}"], z[f"{VALIDATION}_labels"]),
                             TEST: accuracy(z[test], z[f"{TEST}_labels"]) if test in z else None})
    return rows


def best_single(rows: list[dict], n_classes: int, tta: str | None = None, archs: tuple[str, ...] | None = None) -> dict:
    """The (run, TTA) with the highest PublicTest accuracy, among one TTA mode and some architectures if given."""
    return max((r for r in rows if r["classes"] == n_classes and tta in (None, r["tta"])
                and (archs is None or r["arch"] in archs)), key=lambda r: r[VALIDATION])


def calibrated_probs(runs: dict, names: list[str], tta: str) -> dict[str, list[np.ndarray]]:
    """Each split's probabilities of the runs, each at its temperature fitted on PublicTest."""
    temps = {n: fit_temperature(runs[n][f"{VALIDATION}_logits_{tta}"], runs[n][f"{VALIDATION}_labels"]) for n in names}
    return {s: [softmax(runs[n][f"{s}_logits_{tta}"], temps[n]) for n in names] for s in (VALIDATION, TEST)}


def best_ensemble(runs: dict, n_classes: int, prefix: str = "") -> dict:
    """Per TTA mode: members' temperatures and weights fitted on PublicTest; the mode is chosen on PublicTest too.

    ``prefix``: only the runs whose name starts with it (``g`` = the ladder's generations).
    """
    results = []
    for tta in TTA_MODES:
        members = {n: z for n, z in runs.items()
                   if n.startswith(prefix) and len(z["classes"]) == n_classes and f"{TEST}_logits_{tta}" in z}
        if len(members) < 2:
            continue
        names = sorted(members)
        probs = calibrated_probs(members, names, tta)
        val, test = probs[VALIDATION], probs[TEST]
        val_labels, test_labels = members[names[0]][f"{VALIDATION}_labels"], members[names[0]][f"{TEST}_labels"]
        weights = choose_ensemble_weights(val, val_labels)
        results.append({
            "tta": tta, "members": {n: float(w) for n, w in zip(names, weights) if w > 0},
            VALIDATION: float((ensemble_probs(val, weights).argmax(1) == val_labels).mean()),
            TEST: float((ensemble_probs(test, weights).argmax(1) == test_labels).mean()),
        })
    return max(results, key=lambda r: r[VALIDATION])


def arch_params(arch: str, n_classes: int) -> int:
    from ferkit.models import count_params, create_model  # torch only here: the rest of the bench reads logits

    return count_params(create_model(arch, num_classes=n_classes))


def capped_ensemble(runs: dict, n_classes: int, prefix: str, archs: tuple[str, ...], tta: str, picks: int) -> dict:
    """The first ``picks`` picks of greedy forward selection on PublicTest (``choose_ensemble_weights`` with step
    1/picks) among the runs of some architectures, their parameters within BEST_MAX_PARAMS: how the shipped
    ``best`` graph's members are chosen."""
    names = sorted(n for n, z in runs.items() if n.startswith(prefix) and str(z["arch"]) in archs
                   and len(z["classes"]) == n_classes and f"{TEST}_logits_{tta}" in z)
    probs = calibrated_probs(runs, names, tta)
    sizes = [arch_params(str(runs[n]["arch"]), n_classes) for n in names]
    weights = choose_ensemble_weights(probs[VALIDATION], runs[names[0]][f"{VALIDATION}_labels"], step=1 / picks,
                                      sizes=sizes, budget=BEST_MAX_PARAMS)
    return {"tta": tta, "members": {n: float(w) for n, w in zip(names, weights) if w > 0},
            "params": sum(s for s, w in zip(sizes, weights) if w > 0),
            **{s: float((ensemble_probs(probs[s], weights).argmax(1) == runs[names[0]][f"{s}_labels"]).mean())
               for s in (VALIDATION, TEST)}}


def default_tier(runs: dict, n_classes: int) -> dict:
    """The most accurate single-view graph on PublicTest within the default's cost bound in int8: one run, or two
    runs' mean calibrated probabilities (INT8_DEFAULT_PAIRS); ties go to fewer members, then to name order."""
    names = sorted(n for n, z in runs.items() if str(z["arch"]) in INT8_DEFAULT_ARCHS
                   and len(z["classes"]) == n_classes and f"{TEST}_logits_none" in z)
    probs = calibrated_probs(runs, names, "none")
    labels = {s: runs[names[0]][f"{s}_labels"] for s in (VALIDATION, TEST)}
    pairs = [c for c in itertools.combinations(range(len(names)), 2)
             if tuple(sorted(str(runs[names[i]]["arch"]) for i in c)) in INT8_DEFAULT_PAIRS]
    candidates = [(i,) for i in range(len(names))] + pairs

    def score(members: tuple[int, ...], split: str) -> float:
        return float((sum(probs[split][i] for i in members).argmax(1) == labels[split]).mean())

    chosen = max(candidates, key=lambda c: (score(c, VALIDATION), -len(c)))
    return {"tta": "none", "members": [names[i] for i in chosen], **{s: score(chosen, s) for s in (VALIDATION, TEST)}}


def tier_choices(runs: dict, rows: list[dict], ladder: Ladder) -> dict:
    """What each tier would ship, chosen on PublicTest: the first keys among every saved run of the dataset (its
    number of classes), the tiers' own (``*_tier``) among the ladder's runs that could be shipped."""
    n = ladder.n_classes
    fast_pool = ladder.pool(runs, "fast")
    return {"best_single": best_single(rows, n), "best_ensemble": best_ensemble(runs, n),
            "best_single_view": best_single(rows, n, tta="none"),
            "best_fast_single_view": best_single(rows, n, tta="none", archs=FAST_ARCHS),
            "best_default_single_view": best_single(rows, n, tta="none", archs=DEFAULT_ARCHS),
            "best_default_single_view_int8": best_single(rows, n, tta="none", archs=INT8_DEFAULT_ARCHS),
            "ladder_ensemble": best_ensemble(runs, n, prefix=ladder.prefix),
            "default_tier": default_tier(ladder.pool(runs, "default"), n),
            "fast_tier": best_single([r for r in rows if r["run"] in fast_pool], n, tta="none", archs=INT8_FAST_ARCHS),
            "best_tier": capped_ensemble(ladder.pool(runs, "best"), n, ladder.prefix, BEST_ARCHS, BEST_TTA,
                                         ladder.best_members)}


def print_tier_choices(dataset: str, choices: dict) -> None:
    for key in ("best_single_view", "best_default_single_view", "best_default_single_view_int8",
                "best_fast_single_view", "fast_tier"):
        r = choices[key]
        test = "saved no PrivateTest logits: see the bundled re-scoring" if r[TEST] is None else f"{r[TEST]:.2%}"
        print(f"\n{dataset} {key} (chosen on {VALIDATION}): {r['run']} ({r['arch']}) -> {TEST} {test}")
    for key in ("default_tier", "best_tier", "ladder_ensemble"):
        ens = choices[key]
        print(f"{dataset} {key} (chosen on {VALIDATION}): tta={ens['tta']} {ens['members']} "
              f"-> {VALIDATION} {ens[VALIDATION]:.2%}, {TEST} {ens[TEST]:.2%}")


def onnx_table(models: list[str], modes: list[str]) -> list[dict]:
    import ferkit
    from ferkit.data import load_ferplus_split, load_split
    from ferkit.fileio import sha256_of
    from ferkit.weights import resolve_model

    rows = []
    for name in models:
        recognizer = ferkit.load(name)
        ferplus = tuple(recognizer.classes) == FERPLUS_EMOTIONS
        load = load_ferplus_split if ferplus else load_split
        splits = {s: load(s) for s in (VALIDATION, TEST)}
        in_graph = recognizer.meta.get("graph_tta", "none") != "none"  # a merged graph that averages views itself
        for tta in ["none"] if in_graph else modes:
            row = {"model": name, "sha256": sha256_of(resolve_model(name)), "tta": tta,
                   "dataset": "FER+" if ferplus else "FER2013"}
            for split, faces in splits.items():
                row[split] = accuracy(recognizer.logits_faces(faces.images, tta=tta), faces.labels)
            rows.append(row)
            print(f"  {name} {tta}: {row[TEST]:.4f}", flush=True)
    return rows


def markdown(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{r[k]:.2%}" if isinstance(r[k], float) else "–" if r[k] is None else str(r[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-onnx", action="store_true", help="skip re-scoring the bundled ONNX models (default: re-score)")
    bundled = list(read_manifest()["models"])
    p.add_argument("--models", nargs="+", default=bundled,
                   help=f"bundled models to re-score (default: every one, {' '.join(bundled)}; a graph that "
                        "averages views itself only without TTA)")
    p.add_argument("--tta", nargs="+", default=["none", "flip", "crops"], choices=TTA_MODES,
                   help="TTA modes of the re-scoring (default: none flip crops)")
    args = p.parse_args()

    runs = load_runs()
    rows = run_table(runs)
    result = {
        "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "runs": rows,
        **{dataset: tier_choices(runs, rows, ladder) for dataset, ladder in LADDERS.items()},
    }
    print("## GPU runs (saved logits)\n" + markdown(rows, ["run", "arch", "classes", "tta", VALIDATION, TEST]))
    for dataset in LADDERS:
        print_tier_choices(dataset, result[dataset])
    for dataset in LADDERS:
        single, ens = result[dataset]["best_single"], result[dataset]["best_ensemble"]
        print(f"\n{dataset}: best single (chosen on {VALIDATION}): {single['run']} tta={single['tta']} "
              f"-> {TEST} {single[TEST]:.2%}")
        print(f"{dataset}: best ensemble (chosen on {VALIDATION}): tta={ens['tta']} {ens['members']} "
              f"-> {TEST} {ens[TEST]:.2%}")
    if not args.no_onnx:
        print("\n## bundled ONNX models on this CPU")
        result["bundled"] = onnx_table(args.models, args.tta)
        print(markdown(result["bundled"], ["model", "dataset", "tta", VALIDATION, TEST]))
    write_text(OUT, json.dumps(result, indent=1))
    print(f"\nwrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
