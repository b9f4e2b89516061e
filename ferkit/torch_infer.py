"""PyTorch logits of whole face arrays, on the GPU or CPU: the scoring used by training and ``ferkit ensemble``.

Faces enter as (N, S, S) uint8, exactly as the data layer stores them; the TTA views are the numpy
views of ``tta.py`` (the ones ONNX inference uses), and the scaling is the model metadata's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .tta import tta_views


def faces_to_device(faces: np.ndarray, device: torch.device | str, preprocess: str) -> torch.Tensor:
    """(N, S, S) uint8 -> (N, 1, S, S) uint8 on the device, after the report's steps when asked."""
    if preprocess == "report":
        from .preprocess import apply_report_preprocessing

        with ThreadPoolExecutor() as pool:  # OpenCV releases the GIL
            faces = np.stack(list(pool.map(apply_report_preprocessing, faces, chunksize=256)))
    return torch.from_numpy(np.ascontiguousarray(faces)).unsqueeze(1).to(device)


def normalise(x: torch.Tensor, meta: dict) -> torch.Tensor:
    """uint8 (or float in [0, 1]) faces -> the model's input scale, ``(x - mean) / std`` (model metadata)."""
    out = x.float()
    if x.dtype == torch.uint8:
        out = out / 255.0
    return (out - meta["mean"]) / meta["std"]


def tta_tensor(faces: np.ndarray, mode: str, device: torch.device | str, preprocess: str) -> torch.Tensor:
    """(V, N, 1, S, S) uint8 views on the device; the report's steps run once, before the views."""
    faces = faces_to_device(faces, "cpu", preprocess)[:, 0].numpy()
    return torch.stack([faces_to_device(v, device, "none") for v in tta_views(faces, mode)])


@torch.no_grad()
def predict_logits(model: torch.nn.Module, views: torch.Tensor, meta: dict, batch: int = 1024) -> torch.Tensor:
    """Mean logits over TTA views: views (V, N, 1, S, S) uint8 -> (N, C) float32, bfloat16 autocast on a GPU."""
    model.eval()
    out = []
    for v in views:
        chunks = []
        for i in range(0, v.shape[0], batch):
            x = normalise(v[i:i + batch], meta).contiguous(memory_format=torch.channels_last)
            with torch.autocast(v.device.type, dtype=torch.bfloat16, enabled=v.device.type == "cuda"):
                chunks.append(model(x).float())
        out.append(torch.cat(chunks))
    return torch.stack(out).mean(0)


def face_logits(model: torch.nn.Module, faces: np.ndarray, meta: dict, tta: str,
                device: torch.device | str) -> np.ndarray:
    """(N, C) float32 logits of ``faces`` (N, S, S) uint8 with TTA ``tta``; the model is moved to ``device``."""
    model = model.to(device, memory_format=torch.channels_last)
    views = tta_tensor(faces, tta, device, meta["preprocess"])
    return predict_logits(model, views, meta).cpu().numpy()
