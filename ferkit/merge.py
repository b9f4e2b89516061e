"""Several trained models as one: the weighted mean of their calibrated probabilities, in one torch module.

    ferkit export runs/a runs/b runs/c --out best.onnx                  # equal weights
    ferkit export runs/a runs/b --out best.onnx --weights 2 1 --flip    # weighted, mirror averaged in the graph

The module returns log(sum_i w_i softmax(z_i / T_i)) (averaged over the face and its mirror with
``flip``): log-probabilities, so the Recognizer's softmax(output / T) gives exactly that mean
probability while the ensemble's own T is 1, and a T fitted on PublicTest re-calibrates it like any
model's. Members are read with ``load_checkpoint`` (``weights_only=True``: a crafted file is refused,
never run) and must make their input alike (``SHARED_KEYS``). export.py turns the module into the
checked ONNX graph.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint
from .ensemble import member_checkpoint
from .errors import ModelError
from .meta import ENSEMBLE_ARCH, check_meta

SHARED_KEYS = ("classes", "input_size", "channels", "mean", "std", "preprocess", "face_margin")


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: where it came from, the model (eval mode) and its validated metadata."""

    source: str
    model: torch.nn.Module
    meta: dict


class EnsembleNet(torch.nn.Module):
    """(N, 1, S, S) -> (N, C) log of the weighted mean of the members' softmax(logits / T_i)."""

    def __init__(self, members: Sequence[torch.nn.Module], weights: Sequence[float],
                 temperatures: Sequence[float], flip: bool = False):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.log_weights = [math.log(w) for w in weights]  # plain floats: constants of the exported graph
        self.temperatures = [float(t) for t in temperatures]
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.cat([x, torch.flip(x, dims=[3])])  # (2N, 1, S, S): the faces, then their mirrors
        log_probs = torch.stack([F.log_softmax(m(x) / t, dim=1) + log_w for m, t, log_w in
                                 zip(self.members, self.temperatures, self.log_weights)])  # (M, V*N, C)
        mixed = torch.logsumexp(log_probs, dim=0)  # (V*N, C): log sum_i w_i p_i, exact where p_i underflows
        if self.flip:
            mixed = torch.logsumexp(mixed.reshape(2, -1, mixed.shape[-1]), dim=0) - math.log(2)  # mean of views
        return mixed


def load_members(sources: Sequence[str | os.PathLike]) -> list[Member]:
    """Each run folder (its best.pt or weights.pt), .pt file or bundled name, loaded without running its code."""
    return [Member(str(s), *load_checkpoint(member_checkpoint(str(s)))) for s in sources]


def member_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """The weights normalised to sum 1 (equal when None); ModelError for a wrong count or a weight that is not > 0."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ModelError(f"{len(weights)} weights for {n} members: give one weight per member")
    if not all(isinstance(w, (int, float)) and math.isfinite(w) and w > 0 for w in weights):
        raise ModelError(f"member weights must be finite numbers > 0, got {list(weights)}")
    return [float(w) / sum(weights) for w in weights]


def check_members(members: Sequence[Member]) -> None:
    """ModelError, one line, unless every member makes and reads its input like the first one."""
    if not members:
        raise ModelError("an ensemble needs at least one member")
    first = members[0]
    for m in members[1:]:
        differ = [k for k in SHARED_KEYS if m.meta[k] != first.meta[k]]
        if differ:
            k = differ[0]
            raise ModelError(f"{m.source} and {first.source} differ in {', '.join(differ)} ({k}: {m.meta[k]!r} vs "
                             f"{first.meta[k]!r}): the members of one graph must share classes and input preprocessing")


def ensemble_meta(members: Sequence[Member], weights: Sequence[float], flip: bool, name: str) -> dict:
    """The merged graph's metadata: the members' shared input, T = 1, the members' weighted unsure threshold."""
    first = members[0].meta
    threshold = round(sum(w * m.meta["unsure_threshold"] for m, w in zip(members, weights)), 2)
    described = [{"source": m.source, "name": m.meta["name"], "arch": m.meta["arch"], "weight": w,
                  "temperature": m.meta["temperature"]} for m, w in zip(members, weights)]
    return check_meta({**{k: first[k] for k in SHARED_KEYS}, "name": name, "arch": ENSEMBLE_ARCH,
                       "temperature": 1.0, "unsure_threshold": threshold, "members": described,
                       "graph_tta": "flip" if flip else "none",
                       "provenance": {"unsure_threshold": "the members' weighted mean (not fitted)"}},
                      f"ensemble {name!r}")


def ensemble_of(members: Sequence[Member], weights: Sequence[float] | None = None, *, flip: bool = False,
                name: str = ENSEMBLE_ARCH) -> tuple[EnsembleNet, dict]:
    """(module, metadata) of loaded members; each member's own ``meta["temperature"]`` calibrates it."""
    check_members(members)
    weights = member_weights(weights, len(members))
    model = EnsembleNet([m.model for m in members], weights, [m.meta["temperature"] for m in members], flip)
    return model.eval(), ensemble_meta(members, weights, flip, name)


def ensemble_model(sources: Sequence[str | os.PathLike], weights: Sequence[float] | None = None, *,
                   flip: bool = False, name: str = ENSEMBLE_ARCH) -> tuple[EnsembleNet, dict]:
    """(module, metadata) of checkpoints: run folders, .pt files or bundled names; see ``ensemble_of``."""
    weights = member_weights(weights, len(sources)) if sources else None  # a wrong count fails before loading
    return ensemble_of(load_members(sources), weights, flip=flip, name=name)
