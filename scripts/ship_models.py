"""Turn trained checkpoints into the models that ship inside the package.

For each (name, checkpoint, logits) it fits the calibration temperature and the "unsure"
threshold on PublicTest (never on PrivateTest), exports the ONNX model verified against PyTorch on
the whole of PublicTest, copies the float16 checkpoint (for `ferkit train --from NAME`) and records
both SHA-256s in ferkit/weights/manifest.json.

    python scripts/ship_models.py default=runs/fast_kd2 ferplus=runs/fp_fast_kd seed_cnn=runs/seed_cnn

Each run folder holds weights.pt and logits.npz as `scripts/gpu/common.sh` packs them.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ferkit.calibration import fit_temperature, softmax
from ferkit.data import load_split
from ferkit.export import export_onnx, load_checkpoint, verify_onnx, MAX_PROB_DIFF
from ferkit.fileio import sha256_of, write_text
from ferkit.settings import WEIGHTS_DIR

CALIBRATION_TTA = "none"  # the Recognizer's default


def unsure_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The highest confidence below which the model is wrong more often than right on PublicTest."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    best = 0.0
    for t in np.arange(0.20, 0.80, 0.01):
        below = confidence < t
        if below.sum() >= 20 and correct[below].mean() < 0.5:
            best = float(t)
    return round(best, 2)


def ship(name: str, run: Path, manifest: dict) -> None:
    with np.load(run / "logits.npz") as z:
        logits, labels = z[f"PublicTest_logits_{CALIBRATION_TTA}"], z["PublicTest_labels"]
    temperature = fit_temperature(logits, labels)
    threshold = unsure_threshold(softmax(logits, temperature), labels)
    onnx_path = export_onnx(run / "weights.pt", WEIGHTS_DIR / f"{name}.onnx",
                            {"name": name, "temperature": temperature, "unsure_threshold": threshold})
    model, meta = load_checkpoint(run / "weights.pt")
    meta = {**meta, "temperature": temperature}
    diff = verify_onnx(model, onnx_path, load_split("PublicTest").images, meta)
    assert diff <= MAX_PROB_DIFF, f"{name}: ONNX differs from PyTorch by {diff:.2e}"
    checkpoint = WEIGHTS_DIR / f"{name}.pt"
    shutil.copyfile(run / "weights.pt", checkpoint)
    onnx_path.with_name(onnx_path.name + ".sha256").unlink(missing_ok=True)  # the manifest holds the checksum
    manifest["models"][name] = {
        "file": onnx_path.name, "sha256": sha256_of(onnx_path),
        "checkpoint": checkpoint.name, "checkpoint_sha256": sha256_of(checkpoint),
        "arch": meta["arch"], "classes": meta["classes"], "report": f"reports/{name}",
        "trained_by": (run / "gpu_call.txt").read_text().strip() if (run / "gpu_call.txt").exists() else "",
    }
    print(f"{name}: {meta['arch']} T={temperature:.3f} unsure<{threshold} max|Δprob|={diff:.1e} "
          f"{onnx_path.stat().st_size / 1e6:.2f} MB")


def main(pairs: list[str]) -> None:
    manifest_path = WEIGHTS_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.setdefault("models", {})
    for pair in pairs:
        name, run = pair.split("=", 1)
        ship(name, Path(run), manifest)
    write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
