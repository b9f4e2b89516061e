"""Turn trained runs into the models that ship inside the package.

For each NAME=RUN it fits, on PublicTest only (never on PrivateTest), the calibration temperature
(single view, the way the Recognizer predicts) and the "unsure" threshold (calibration.UNSURE_RULE);
writes the float16 checkpoint ``weights/NAME.pt`` (for `ferkit train --from NAME`) and the ONNX model
``weights/NAME.onnx`` verified against PyTorch on the whole of PublicTest; records both SHA-256s in
``weights/manifest.json``; and writes the model's evaluation report on PrivateTest into
``weights/reports/NAME/`` with `ferkit evaluate` (ONNX Runtime, CPU).

    python scripts/ship_models.py default=runs/ladder/g2_vgg_c fast=runs/ship/fast
    python scripts/ship_models.py best=runs/a,runs/b:2,runs/c --flip   # one graph of an ensemble (ferkit.merge)
    python scripts/ship_models.py seed_cnn ferplus        # a bare name: only its report (and manifest accuracy)
    python scripts/ship_models.py fast=runs/ladder/g11_wide_b --int8 fast   # its ONNX file in int8
    python scripts/ship_models.py default=runs/ladder/g10_vgg_2,runs/ladder/g10_vgg_1 --int8 default
                                                          # one single-view graph of two runs; default.pt: the first's

--int8 NAME ships NAME's ONNX graph quantized (ferkit.quantize: static QDQ, 7-bit weights, calibrated on
Training faces) if it loses at most MAX_LOSS_POINTS on PublicTest against the fp32 graph, re-calibrated on
PublicTest; else the fp32 graph stays. NAME.pt keeps the float weights (for `ferkit train --from`).
A shipped ONNX file over MAX_BUNDLED_BYTES (20 MB: a committed file's limit) is refused before the manifest names it.

NAME=RUN1,RUN2[:WEIGHT],... ships an ensemble as one ONNX graph: each member's temperature is fitted
on PublicTest from its own logits.npz, the graph averages the members' calibrated probabilities
(weights normalised to sum 1; with --flip, each face's and its mirror's), and the graph's own
temperature and unsure threshold are then fitted on PublicTest through the Recognizer. An ensemble is not a
starting point for `ferkit train --from`: its NAME.pt, for the names given to --checkpoint (default: default and
ferplus), is its first member's float weights (list the member to fine-tune first), and there is none for the others.

Each run folder holds weights.pt (scripts/gpu/pack_runs.py) and logits.npz (`ferkit train`), and
gpu_call.txt, the command that trained it (from the call's logs.tgz): a model does not ship without it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ferkit.calibration import UNSURE_RULE, fit_temperature, fit_unsure_threshold, softmax
from ferkit.checkpoint import load_checkpoint, pack, read_checkpoint, save_checkpoint
from ferkit.ensemble import load_faces
from ferkit.evaluate import main as evaluate_main
from ferkit.export import MAX_PROB_DIFF, export_onnx, sidecar_path, verify_onnx
from ferkit.fileio import sha256_of, write_bytes, write_text
from ferkit.infer import load
from ferkit.merge import Member, ensemble_of, load_members
from ferkit.meta import ENSEMBLE_ARCH, check_meta
from ferkit.quantize import MAX_LOSS_POINTS, QUANTIZATION, calibration_faces, int8_bytes, quantize
from ferkit.settings import WEIGHTS_DIR
from ferkit.weights import MAX_BUNDLED_BYTES

CALIBRATION_TTA = "none"  # the Recognizer's default
CALIBRATION_SPLIT = "PublicTest"
REPORT_SPLIT = "PrivateTest"
CHECKPOINT_TIERS = ("default", "ferplus")  # the single-view tiers one fine-tunes from (`ferkit train --from`)


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(temperature, unsure threshold) fitted on held-out logits."""
    temperature = fit_temperature(logits, labels)
    return temperature, fit_unsure_threshold(softmax(logits, temperature), labels)


def fitted_meta(name: str, run: Path, meta: dict) -> dict:
    """The run's metadata with the shipped name, and temperature and unsure threshold fitted on PublicTest."""
    with np.load(run / "logits.npz") as z:
        logits, labels = z[f"{CALIBRATION_SPLIT}_logits_{CALIBRATION_TTA}"], z[f"{CALIBRATION_SPLIT}_labels"]
    temperature, threshold = fit_calibration(logits, labels)
    if not (run / "gpu_call.txt").is_file():
        raise SystemExit(f"{run}: no gpu_call.txt, the command that trained it; copy it from the GPU call's logs.tgz")
    trained_by = (run / "gpu_call.txt").read_text().strip()
    provenance = {**meta.get("provenance", {}), "run": run.name, "trained_by": trained_by,
                  "calibrated_on": f"{CALIBRATION_SPLIT}, single view", "unsure_rule": UNSURE_RULE}
    return check_meta({**meta, "name": name, "temperature": temperature, "unsure_threshold": threshold,
                       "provenance": provenance}, str(run))


def verified_onnx(name: str, model: torch.nn.Module, onnx_path: Path, meta: dict) -> float:
    """Max |Δprob| of the written ONNX file against PyTorch on the whole calibration split; fails above the bound."""
    faces = load_faces(CALIBRATION_SPLIT, tuple(meta["classes"]), None).images
    diff = verify_onnx(model, onnx_path, faces, meta)
    assert diff <= MAX_PROB_DIFF, f"{name}: ONNX differs from PyTorch by {diff:.2e}"
    return diff


def ship_checkpoint(name: str, run: Path) -> Path:
    """The run's float16 weights as ``weights/NAME.pt``, with its metadata fitted on PublicTest."""
    ckpt = read_checkpoint(run / "weights.pt")
    checkpoint = WEIGHTS_DIR / f"{name}.pt"
    save_checkpoint(checkpoint, pack(ckpt, fitted_meta(name, run, ckpt["meta"])))
    return checkpoint


def ship(name: str, run: Path, manifest: dict) -> None:
    checkpoint = ship_checkpoint(name, run)
    onnx_path = export_onnx(checkpoint, WEIGHTS_DIR / f"{name}.onnx")
    sidecar_path(onnx_path).unlink(missing_ok=True)  # the manifest holds the checksum
    model, meta = load_checkpoint(checkpoint)
    diff = verified_onnx(name, model, onnx_path, meta)
    manifest["models"][name] = {
        "file": onnx_path.name, "sha256": sha256_of(onnx_path),
        "checkpoint": checkpoint.name, "checkpoint_sha256": sha256_of(checkpoint),
        "arch": meta["arch"], "classes": meta["classes"], "report": f"reports/{name}",
        "trained_by": meta["provenance"]["trained_by"],
    }
    print(f"{name}: {meta['arch']} T={meta['temperature']:.3f} unsure<{meta['unsure_threshold']} "
          f"max|Δprob|={diff:.1e} {onnx_path.stat().st_size / 1e6:.2f} MB")


def calibration_split_logits(onnx_path: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """(accuracy, logits, labels) of an ONNX graph on the calibration split, through the Recognizer as it predicts."""
    recognizer = load(onnx_path, detector="haar")
    faces = load_faces(CALIBRATION_SPLIT, tuple(recognizer.meta["classes"]), None)
    logits = recognizer.logits_faces(faces.images, CALIBRATION_TTA)
    return float((logits.argmax(1) == faces.labels).mean()), logits, faces.labels


def ship_int8(name: str, manifest: dict) -> None:
    """NAME's shipped ONNX graph replaced by its int8 graph, if that loses at most MAX_LOSS_POINTS on PublicTest."""
    entry = manifest["models"][name]
    if "quantized" in entry:
        print(f"{name}: already int8 ({entry['quantized']}); ship it from its run again to quantize anew")
        return
    fp32_path = WEIGHTS_DIR / entry["file"]
    meta = load(fp32_path, detector="haar").meta
    fp32_acc, _, _ = calibration_split_logits(fp32_path)
    with tempfile.TemporaryDirectory() as tmp:
        int8_path = quantize(fp32_path, meta, calibration_faces(), Path(tmp) / "int8.onnx", reduce_range=True)
        int8_acc, logits, labels = calibration_split_logits(int8_path)
        loss = 100 * (fp32_acc - int8_acc)
        if loss > MAX_LOSS_POINTS:
            print(f"{name}: int8 not shipped, it loses {loss:.2f} points on {CALIBRATION_SPLIT} (> {MAX_LOSS_POINTS})")
            return
        temperature, threshold = fit_calibration(logits, labels)
        int8 = {"quantization": QUANTIZATION + ", 7-bit weights (reduce_range)", f"{CALIBRATION_SPLIT}_fp32": fp32_acc,
                f"{CALIBRATION_SPLIT}_int8": int8_acc, "calibration_faces": "512 Training faces, seed 0"}
        meta = check_meta({**meta, "temperature": temperature, "unsure_threshold": threshold,
                           "provenance": {**meta["provenance"], "int8": int8}}, name)
        write_bytes(fp32_path, int8_bytes(int8_path, meta))
    entry |= {"sha256": sha256_of(fp32_path), "quantized": int8["quantization"]}
    print(f"{name}: int8 {CALIBRATION_SPLIT} {int8_acc:.2%} (fp32 {fp32_acc:.2%}) T={temperature:.3f} "
          f"unsure<{threshold} {fp32_path.stat().st_size / 1e6:.2f} MB")


def member_runs(spec: str) -> tuple[list[Path], list[float]]:
    """``RUN1,RUN2:2,...`` -> the run folders and their weights (1 where none is given)."""
    runs, weights = [], []
    for item in spec.split(","):
        run, _, weight = item.rpartition(":") if ":" in item else (item, "", "1")
        runs.append(Path(run))
        weights.append(float(weight))
    return runs, weights


def ensemble_calibration(model: torch.nn.Module, meta: dict) -> tuple[float, float]:
    """(temperature, unsure threshold) of the merged graph, fitted on its own PublicTest logits (Recognizer, T = 1)."""
    with tempfile.TemporaryDirectory() as tmp:
        _, logits, labels = calibration_split_logits(export_onnx(model, Path(tmp) / "uncalibrated.onnx", meta))
        return fit_calibration(logits, labels)


def ship_ensemble(name: str, spec: str, flip: bool, keep_checkpoint: bool, manifest: dict) -> None:
    """NAME=RUN1,RUN2[:WEIGHT],...: one ONNX graph of the runs' ensemble (module docstring); with
    ``keep_checkpoint``, NAME.pt is the first member's float weights."""
    runs, weights = member_runs(spec)
    members = [Member(run.name, m.model, fitted_meta(run.name, run, m.meta))
               for run, m in zip(runs, load_members([run / "weights.pt" for run in runs]))]
    model, meta = ensemble_of(members, weights, flip=flip, name=name)
    temperature, threshold = ensemble_calibration(model, meta)
    trained_by = " | ".join(dict.fromkeys(m.meta["provenance"]["trained_by"] for m in members))
    provenance = {"members": [run.name for run in runs], "trained_by": trained_by, "unsure_rule": UNSURE_RULE,
                  "calibrated_on": f"{CALIBRATION_SPLIT}, the merged graph (in-graph TTA {meta['graph_tta']})"}
    meta = check_meta({**meta, "temperature": temperature, "unsure_threshold": threshold, "provenance": provenance},
                      name)
    onnx_path = export_onnx(model, WEIGHTS_DIR / f"{name}.onnx", meta)
    sidecar_path(onnx_path).unlink(missing_ok=True)  # the manifest holds the checksum
    diff = verified_onnx(name, model, onnx_path, meta)
    manifest["models"][name] = {
        "file": onnx_path.name, "sha256": sha256_of(onnx_path), "arch": ENSEMBLE_ARCH,
        "members": [{"run": m["source"], "arch": m["arch"], "weight": m["weight"]} for m in meta["members"]],
        "graph_tta": meta["graph_tta"], "classes": meta["classes"], "report": f"reports/{name}",
        "trained_by": trained_by,
    }
    checkpoint = WEIGHTS_DIR / f"{name}.pt"
    checkpoint.unlink(missing_ok=True)  # a single model's of the same name would stay behind
    if keep_checkpoint:
        ship_checkpoint(name, runs[0])
        manifest["models"][name] |= {"checkpoint": checkpoint.name, "checkpoint_sha256": sha256_of(checkpoint),
                                     "checkpoint_run": runs[0].name}
    print(f"{name}: {ENSEMBLE_ARCH} of {len(runs)} (in-graph TTA {meta['graph_tta']}) T={temperature:.3f} "
          f"unsure<{threshold} max|Δprob|={diff:.1e} {onnx_path.stat().st_size / 1e6:.2f} MB")


def check_size(name: str, manifest: dict) -> None:
    """SystemExit, one line, before the manifest names a file over MAX_BUNDLED_BYTES."""
    path = WEIGHTS_DIR / manifest["models"][name]["file"]
    size = path.stat().st_size
    if size > MAX_BUNDLED_BYTES:
        raise SystemExit(f"{path}: {size / 1e6:.1f} MB, over the {MAX_BUNDLED_BYTES / 1e6:.1f} MB a bundled file may "
                         "have: ship fewer or smaller members, or in int8 (--int8 NAME); the manifest is unchanged "
                         "(git checkout ferkit/weights restores the file)")


def write_report(name: str, manifest: dict) -> None:
    """`ferkit evaluate NAME --split PrivateTest` into weights/reports/NAME; its accuracy goes into the manifest."""
    entry = manifest["models"][name]
    out = WEIGHTS_DIR / entry["report"]
    evaluate_main([name, "--split", REPORT_SPLIT, "--out", os.path.relpath(out)])  # relative: the report records it
    metrics = json.loads((out / "metrics.json").read_text())
    entry["accuracy"] = {"split": REPORT_SPLIT, "tta": entry.get("graph_tta", "none"), "value": metrics["accuracy"]}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("scripts/ship_models.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="NAME[=RUN[,RUN[:WEIGHT]...]]",
                   help="NAME=RUN ships a run, NAME=RUN1,RUN2,... one graph of their ensemble, a bare NAME only "
                        "rewrites the report of a shipped model")
    p.add_argument("--flip", action="store_true",
                   help="ensembles average each face with its mirror inside the graph (default: off)")
    p.add_argument("--int8", nargs="+", default=[], metavar="NAME",
                   help="ship these models' ONNX graphs in int8 when they lose at most "
                        f"{MAX_LOSS_POINTS} points on PublicTest (default: none)")
    p.add_argument("--checkpoint", nargs="+", default=list(CHECKPOINT_TIERS), metavar="NAME",
                   help="ensembles that ship their first member's float weights as NAME.pt, the starting point of "
                        f"`ferkit train --from NAME`; 'none' for no ensemble (default: {' '.join(CHECKPOINT_TIERS)})")
    return p


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    manifest_path = WEIGHTS_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.setdefault("models", {})
    for pair in args.models:
        name, _, runs = pair.partition("=")
        if "," in runs:
            ship_ensemble(name, runs, args.flip, name in args.checkpoint, manifest)
        elif runs:
            ship(name, Path(runs), manifest)
        if name in args.int8:
            ship_int8(name, manifest)
        if runs or name in args.int8:
            check_size(name, manifest)
            write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        write_report(name, manifest)
        write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
