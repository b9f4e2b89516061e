"""The model contract: what a model file says about itself, defined once for training, export and inference.

Every checkpoint (``meta`` key) and every ONNX file (the ``ferkit`` metadata property) holds one
``ModelMeta`` as a JSON object; inference reads how to frame, scale and calibrate faces from it and
never guesses from a file name. docs/design.md lists the fields.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import ModelError
from .labels import EMOTIONS

PREPROCESS_MODES = ("none", "report")
ENSEMBLE_ARCH = "ensemble"  # the arch of a merged graph (ferkit.merge); its members' archs are in ``members``
GRAPH_TTA_MODES = ("none", "flip")  # test-time views averaged inside the graph itself (ferkit.merge)
DEFAULT_MARGIN = 0.0  # FER2013 faces are framed by YuNet's box itself: measured margin -0.03 (docs/faces.md)
REQUIRED = ("name", "arch", "classes", "input_size", "channels", "mean", "std", "preprocess", "temperature",
            "unsure_threshold")


@dataclass(frozen=True)
class ModelMeta:
    """How a model's input is made and its output read.

    ``temperature`` divides the logits before the softmax (fitted on PublicTest); a face whose calibrated
    top probability is below ``unsure_threshold`` is flagged unsure. ``provenance`` records where the
    weights came from (run, command, teacher); it never changes what the model computes. A merged graph
    (``ferkit.merge``) lists its ``members`` (source, name, arch, weight, temperature; weights sum to 1) and
    ``graph_tta``, the views it averages itself; a single model has no members and ``graph_tta`` "none".
    """

    name: str
    arch: str
    classes: tuple[str, ...] = EMOTIONS
    input_size: int = 48
    channels: int = 1
    mean: float = 0.5
    std: float = 0.25
    preprocess: str = "none"
    temperature: float = 1.0
    unsure_threshold: float = 0.0
    face_margin: float = DEFAULT_MARGIN
    provenance: dict = field(default_factory=dict)
    members: tuple[dict, ...] = ()
    graph_tta: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if isinstance(self.members, (list, tuple)):
            object.__setattr__(self, "members", tuple(self.members))
        problems = self.problems()
        if problems:
            raise ModelError(f"invalid model metadata: {'; '.join(problems)}")

    def problems(self) -> list[str]:
        """What is out of range, one phrase each (empty when the metadata is valid)."""
        out = []
        c = self.classes
        if not (len(c) >= 2 and all(isinstance(x, str) and x for x in c) and len(set(c)) == len(c)):
            out.append(f"classes must be 2 or more distinct names, got {list(c)!r}")
        if not (isinstance(self.input_size, int) and not isinstance(self.input_size, bool) and self.input_size >= 8):
            out.append(f"input_size must be an integer >= 8, got {self.input_size!r}")
        if self.channels != 1:
            out.append(f"channels must be 1 (grayscale), got {self.channels!r}")
        if self.preprocess not in PREPROCESS_MODES:
            out.append(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {self.preprocess!r}")
        ranges = {"mean": lambda v: True, "std": lambda v: v > 0, "temperature": lambda v: v > 0,
                  "unsure_threshold": lambda v: 0 <= v <= 1, "face_margin": lambda v: v > -0.5}
        for key, in_range in ranges.items():
            value = getattr(self, key)
            if not (_is_number(value) and in_range(value)):
                out.append(f"{key} is out of range: {value!r}")
        if not isinstance(self.provenance, dict):
            out.append(f"provenance must be an object, got {type(self.provenance).__name__}")
        if self.graph_tta not in GRAPH_TTA_MODES:
            out.append(f"graph_tta must be one of {', '.join(GRAPH_TTA_MODES)}, got {self.graph_tta!r}")
        return out + _member_problems(self.members)

    @classmethod
    def from_dict(cls, meta: Any, where: str) -> "ModelMeta":
        """Validate a stored metadata object; ModelError names ``where`` and everything that is wrong."""
        if not isinstance(meta, dict):
            raise ModelError(f"{where}: model metadata must be a JSON object, got {type(meta).__name__}")
        missing = [k for k in REQUIRED if k not in meta]
        if missing:
            raise ModelError(f"{where}: model metadata lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in meta.items() if k in known})
        except (ModelError, TypeError) as e:
            raise ModelError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        """The JSON object stored in checkpoints and ONNX files (classes as a list)."""
        d = asdict(self)
        d["classes"] = list(self.classes)
        d["members"] = list(self.members)
        return d

    def replace(self, **changes) -> "ModelMeta":
        return replace(self, **changes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _member_problems(members: Any) -> list[str]:
    """What is wrong with a merged graph's ``members`` list, at most one phrase (empty when valid)."""
    if not isinstance(members, tuple) or not all(isinstance(m, dict) for m in members):
        return [f"members must be a list of objects, got {members!r}"]
    for i, m in enumerate(members):
        if not (isinstance(m.get("name"), str) and isinstance(m.get("arch"), str)):
            return [f"members entry {i} needs a name and an arch, got {m!r}"]
        if not all(_is_number(m.get(k)) and m[k] > 0 for k in ("weight", "temperature")):
            return [f"members entry {i} needs a weight and a temperature > 0, got {m!r}"]
    if members and not math.isclose(sum(m["weight"] for m in members), 1.0, abs_tol=1e-6):
        return [f"members weights must sum to 1, got {sum(m['weight'] for m in members)!r}"]
    return []


def check_meta(meta: Any, where: str) -> dict:
    """``meta`` validated and completed with the defaults of optional fields, as a plain dict."""
    return ModelMeta.from_dict(meta, where).to_dict()


def default_meta(arch: str, classes: tuple[str, ...] = EMOTIONS, name: str | None = None, **overrides) -> dict:
    """Metadata for a model that has none yet: the standard input, no calibration (T = 1)."""
    return ModelMeta(name=name or arch, arch=arch, classes=classes, **overrides).to_dict()
