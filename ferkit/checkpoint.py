"""Checkpoints: the one place that writes and reads ``.pt`` files (needs torch, never onnx).

A checkpoint is a dict of tensors and plain values only, so it is always read with
``torch.load(weights_only=True)``: a file that would need more (a pickled object, code) is refused,
never run. Keys: ``model`` (state dict), ``arch``, ``model_kwargs``, ``meta`` (the ModelMeta
object, docs/design.md), and for training runs ``epoch``, ``best_metric``, ``args``, ``log``,
``optimizer``, ``scheduler``, ``aux_head`` and ``rng``. ``pack`` keeps what inference and
fine-tuning need, in float16.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from .errors import ModelError
from .weights import bundled_checkpoints, check_sha256, read_manifest
from .fileio import atomic_path
from .meta import check_meta
from .models import create_model
from .settings import WEIGHTS_DIR

REQUIRED_KEYS = ("model", "arch", "meta")
PACKED_KEYS = ("arch", "model_kwargs", "meta", "epoch", "best_metric", "args", "log")


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint file: a path, or a bundled model name ("default", "ferplus") -> ``weights/<name>.pt``.

    A bundled checkpoint is checked against the manifest's ``models.<name>.checkpoint_sha256`` when listed.
    """
    path = Path(name_or_path)
    if path.is_file() or path.suffix or os.sep in str(name_or_path):
        if not path.is_file():
            raise ModelError(f"checkpoint not found: {path}")
        return path
    name = str(name_or_path)
    entry = read_manifest().get("models", {}).get(name, {})
    path = WEIGHTS_DIR / entry.get("checkpoint", f"{name}.pt")
    if not path.is_file():
        bundled = bundled_checkpoints(WEIGHTS_DIR)  # the folder looked in above
        raise ModelError(f"no bundled checkpoint named {name!r} ({path} not found; bundled: "
                         f"{', '.join(bundled) or 'none'}); pass the path of a .pt file written by ferkit train")
    if "checkpoint_sha256" in entry:
        check_sha256(path, entry["checkpoint_sha256"], f"checkpoint {name!r}")
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict, read without running any code from the file; ModelError says what is wrong."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelError(f"refused {path}: it holds more than tensors and plain values, and loading it could run "
                         f"code ({str(e).splitlines()[0][:160]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise ModelError(f"cannot read checkpoint {path}: the file is truncated or not a PyTorch checkpoint "
                         f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not set(REQUIRED_KEYS) <= set(ckpt):
        raise ModelError(f"{path} is not a ferkit checkpoint: it needs the keys {', '.join(REQUIRED_KEYS)}")
    return ckpt


def load_checkpoint(name_or_path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """The model (eval mode, CPU, float32) and metadata of a checkpoint of ``ferkit train``, or of a bundled one."""
    path = resolve_checkpoint(name_or_path)
    ckpt = read_checkpoint(path)
    meta = check_meta(ckpt["meta"], str(path))
    try:
        model = create_model(ckpt["arch"], num_classes=len(meta["classes"]), **ckpt.get("model_kwargs", {}))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    except (ValueError, RuntimeError, TypeError, AttributeError) as e:
        raise ModelError(f"cannot rebuild the model of {path}: {e}") from e
    return model.eval(), meta


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> None:
    """Write ``ckpt`` atomically (a temp file renamed over ``path``: a kill leaves the old file whole)."""
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"a checkpoint needs {', '.join(missing)}")
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def pack(ckpt: dict, meta: dict | None = None) -> dict:
    """What a shipped checkpoint keeps: float16 weights, metadata and the run's record; no optimiser state."""
    small = {k: ckpt[k] for k in PACKED_KEYS if k in ckpt}
    small["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    small.setdefault("model_kwargs", {})
    if meta is not None:
        small["meta"] = meta
    return small


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove temp files that a kill during ``save_checkpoint`` left in ``folder``; returns what was removed."""
    stale = [p for p in folder.glob(".*.pt") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
