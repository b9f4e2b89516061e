"""Logits of a checkpoint on PublicTest and PrivateTest, in the logits.npz layout of ferkit train.

For runs whose training was stopped before its own final scoring (see docs/results.md):
    python scripts/score_checkpoint.py runs/vgg_s2/weights.pt runs/vgg_s2/logits.npz --tta none flip
"""

import argparse

import numpy as np
import torch

from ferkit.data import load_split
from ferkit.fileio import atomic_open
from ferkit.export import load_checkpoint
from ferkit.models import InputConfig
from ferkit.train import predict_logits, tta_tensor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--tta", nargs="+", default=["none", "flip"], choices=["none", "flip", "crops"])
    args = p.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    cfg = InputConfig(meta["input_size"], meta["channels"], meta["mean"], meta["std"])
    arrays = {"classes": np.array(meta["classes"])}
    for split in ("PublicTest", "PrivateTest"):
        faces = load_split(split)
        arrays[f"{split}_labels"] = faces.labels
        for mode in args.tta:
            with torch.inference_mode():
                logits = predict_logits(model, tta_tensor(faces.images, mode, "cpu", meta["preprocess"]), cfg, batch=256)
            arrays[f"{split}_logits_{mode}"] = logits.numpy()
            acc = (arrays[f"{split}_logits_{mode}"].argmax(1) == faces.labels).mean()
            print(f"{split} {mode}: accuracy {acc:.4f}", flush=True)
    with atomic_open(args.out, "wb") as f:
        np.savez_compressed(f, **arrays)


if __name__ == "__main__":
    main()
