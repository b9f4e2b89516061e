"""Turn trained runs into the models that ship inside the package.

For each NAME=RUN it fits, on PublicTest only (never on PrivateTest), the calibration temperature
(single view, the way the Recognizer predicts) and the "unsure" threshold (calibration.UNSURE_RULE);
writes the float16 checkpoint ``weights/NAME.pt`` (for `ferkit train --from NAME`) and the ONNX model
``weights/NAME.onnx`` verified against PyTorch on the whole of PublicTest; records both SHA-256s in
``weights/manifest.json``; and writes the model's evaluation report on PrivateTest into
``weights/reports/NAME/`` with `ferkit evaluate` (ONNX Runtime, CPU).

    python scripts/ship_models.py default=runs/ladder/g2_vgg_c fast=runs/ship/fast
    python scripts/ship_models.py seed_cnn ferplus        # a bare name: only its report (and manifest accuracy)

Each run folder holds weights.pt (scripts/gpu/pack_runs.py) and logits.npz (`ferkit train`), and
optionally gpu_call.txt, the command that trained it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from ferkit.calibration import UNSURE_RULE, fit_temperature, fit_unsure_threshold, softmax
from ferkit.checkpoint import load_checkpoint, pack, read_checkpoint, save_checkpoint
from ferkit.data import load_ferplus_split, load_split
from ferkit.evaluate import main as evaluate_main
from ferkit.export import MAX_PROB_DIFF, export_onnx, sidecar_path, verify_onnx
from ferkit.fileio import sha256_of, write_text
from ferkit.meta import check_meta
from ferkit.settings import WEIGHTS_DIR

CALIBRATION_TTA = "none"  # the Recognizer's default
REPORT_SPLIT = "PrivateTest"


def fitted_meta(name: str, run: Path, meta: dict) -> dict:
    """The run's metadata with the shipped name, and temperature and unsure threshold fitted on PublicTest."""
    with np.load(run / "logits.npz") as z:
        logits, labels = z[f"PublicTest_logits_{CALIBRATION_TTA}"], z["PublicTest_labels"]
    temperature = fit_temperature(logits, labels)
    threshold = fit_unsure_threshold(softmax(logits, temperature), labels)
    trained_by = (run / "gpu_call.txt").read_text().strip() if (run / "gpu_call.txt").exists() else ""
    provenance = {**meta.get("provenance", {}), "run": run.name, "trained_by": trained_by,
                  "calibrated_on": "PublicTest, single view", "unsure_rule": UNSURE_RULE}
    return check_meta({**meta, "name": name, "temperature": temperature, "unsure_threshold": threshold,
                       "provenance": provenance}, str(run))


def ship(name: str, run: Path, manifest: dict) -> None:
    ckpt = read_checkpoint(run / "weights.pt")
    meta = fitted_meta(name, run, ckpt["meta"])
    checkpoint = WEIGHTS_DIR / f"{name}.pt"
    save_checkpoint(checkpoint, pack(ckpt, meta))
    onnx_path = export_onnx(checkpoint, WEIGHTS_DIR / f"{name}.onnx")
    sidecar_path(onnx_path).unlink(missing_ok=True)  # the manifest holds the checksum
    model, meta = load_checkpoint(checkpoint)
    faces = (load_ferplus_split if "contempt" in meta["classes"] else load_split)("PublicTest").images
    diff = verify_onnx(model, onnx_path, faces, meta)
    assert diff <= MAX_PROB_DIFF, f"{name}: ONNX differs from PyTorch by {diff:.2e}"
    manifest["models"][name] = {
        "file": onnx_path.name, "sha256": sha256_of(onnx_path),
        "checkpoint": checkpoint.name, "checkpoint_sha256": sha256_of(checkpoint),
        "arch": meta["arch"], "classes": meta["classes"], "report": f"reports/{name}",
        "trained_by": meta["provenance"]["trained_by"],
    }
    print(f"{name}: {meta['arch']} T={meta['temperature']:.3f} unsure<{meta['unsure_threshold']} "
          f"max|Δprob|={diff:.1e} {onnx_path.stat().st_size / 1e6:.2f} MB")


def write_report(name: str, manifest: dict) -> None:
    """`ferkit evaluate NAME --split PrivateTest` into weights/reports/NAME; its accuracy goes into the manifest."""
    out = WEIGHTS_DIR / manifest["models"][name]["report"]
    evaluate_main([name, "--split", REPORT_SPLIT, "--out", os.path.relpath(out)])  # relative: the report records it
    metrics = json.loads((out / "metrics.json").read_text())
    manifest["models"][name]["accuracy"] = {"split": REPORT_SPLIT, "tta": "none", "value": metrics["accuracy"]}


def main(pairs: list[str]) -> None:
    manifest_path = WEIGHTS_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.setdefault("models", {})
    for pair in pairs:  # NAME=RUN ships and reports; a bare NAME only rewrites the report of a shipped model
        name, _, run = pair.partition("=")
        if run:
            ship(name, Path(run), manifest)
            write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
        write_report(name, manifest)
        write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
