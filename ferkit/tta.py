"""Test-time augmentation views, in numpy, shared by GPU evaluation in training and ONNX inference.

A view set turns faces (N, H, W) uint8 into (V, N, H, W) uint8; a model's probabilities are
averaged over the V views.
"""

from __future__ import annotations

import numpy as np

TTA_MODES = ("none", "flip", "crops")
_CROP_SHIFT = 3  # pixels; the five crops are the centre and four corners of a 3-px edge-padded face


def tta_views(faces: np.ndarray, mode: str = "none") -> np.ndarray:
    """``none``: the faces; ``flip``: faces + mirrored; ``crops``: 5 shifted crops x 2 mirrors (10 views)."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; choose one of {', '.join(TTA_MODES)}")
    if mode == "none":
        return faces[None]
    if mode == "flip":
        return np.stack([faces, faces[:, :, ::-1]])
    n, h, w = faces.shape
    s = _CROP_SHIFT
    padded = np.pad(faces, ((0, 0), (s, s), (s, s)), mode="edge")
    offsets = [(s, s), (0, 0), (0, 2 * s), (2 * s, 0), (2 * s, 2 * s)]
    crops = [padded[:, dy:dy + h, dx:dx + w] for dy, dx in offsets]
    return np.ascontiguousarray(np.stack(crops + [c[:, :, ::-1] for c in crops]))
