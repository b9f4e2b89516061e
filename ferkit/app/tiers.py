"""The bundled models as tiers (issue 12): architecture, accuracy and milliseconds per face of each.

Accuracy is the manifest's ``accuracy`` (measured by ``ferkit evaluate``). The time per face is read
from ``benchmarks/results/infer.json`` (written by ``python -m benchmarks.bench_infer``), never
measured by the app: a model that file does not list, or lists with another architecture (an
older model under the same name), shows "–".
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ..labels import FERPLUS_EMOTIONS

INFER_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "infer.json"
ARCH_TITLES = {"vgg": "VGG", "vgg_deep": "VGG-deep", "resnet18": "ResNet-18"}  # others show their registry name
# (a merged graph's arch is "ensemble": it shows its members' architectures, "VGG ×3 + ResNet-18", from the
# manifest's ``members``, or "ensemble of N" where they are not listed)
MISSING = "–"


@dataclass(frozen=True)
class Tier:
    """One bundled model as the picker and the Model page describe it."""

    name: str
    arch: str
    dataset: str                 # FER2013 or FER+: whose labels the accuracy is measured on
    accuracy: float | None
    split: str | None
    ms_per_face: float | None
    members: int = 0             # models merged into one graph (ferkit.merge); 0 for a single model
    int8: bool = False           # the graph is quantized (scripts/ship_models.py --int8)
    member_archs: tuple[str, ...] = ()  # the merged models' architectures, where the manifest lists them

    def architecture(self) -> str:
        if self.members and len(self.member_archs) == self.members:
            title = " + ".join(ARCH_TITLES.get(a, a) + (f" ×{n}" if n > 1 else "")
                               for a, n in Counter(self.member_archs).items())
        else:
            title = ARCH_TITLES.get(self.arch, self.arch)
            title = f"{title} of {self.members}" if self.members else title
        return f"{title} int8" if self.int8 else title

    def accuracy_text(self) -> str:
        return MISSING if self.accuracy is None else f"{self.accuracy:.1%}".replace("%", " %")

    def ms_text(self) -> str:
        return MISSING if self.ms_per_face is None else f"{self.ms_per_face:.{0 if self.ms_per_face >= 10 else 1}f}"

    def label(self) -> str:
        """``default — VGG, 72.6 % FER2013, 11 ms/face`` (a "–" for what is not known)."""
        return f"{self.name} — {self.architecture()}, {self.accuracy_text()} {self.dataset}, " \
               f"{self.ms_text()} ms/face"

    def row(self) -> dict:
        """The Model page's table row (texts, "–" where not known)."""
        return {"model": self.name, "architecture": self.architecture(), "labels": self.dataset,
                "accuracy": self.accuracy_text(), "measured on": self.split or MISSING,
                "ms per face": MISSING if self.ms_per_face is None else f"{self.ms_per_face:.2f}"}


@st.cache_data(show_spinner=False, max_entries=4)
def _measured(path: str, mtime_ns: int) -> dict:
    """infer.json's ``{name: ((arch, members), ONNX Runtime median ms), ...}`` and its machine; {} when unreadable."""
    try:
        report = json.loads(Path(path).read_text())
        models = {m["name"]: ((m.get("arch"), m.get("members", 0)), float(m["latency"]["onnxruntime"]["median_ms"]))
                  for m in report.get("models", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    return {"models": models, "machine": report.get("machine", {})}


def measured() -> dict:
    """The benchmark's per-face times (see ``_measured``), re-read when the file changes."""
    path = INFER_RESULTS
    try:
        return _measured(str(path), path.stat().st_mtime_ns)
    except OSError:
        return {}


def tier(name: str, entry: dict, speeds: dict) -> Tier:
    """A manifest entry as a Tier; its time per face only when infer.json lists the same architecture (for an
    ensemble, as many members)."""
    arch = entry.get("arch", "?")
    listed = entry["members"] if isinstance(entry.get("members"), list) else []
    members = len(listed)
    member_archs = tuple(str(m["arch"]) for m in listed if isinstance(m, dict) and "arch" in m)
    accuracy = entry.get("accuracy") if isinstance(entry.get("accuracy"), dict) else {}
    timed_as, ms = speeds.get("models", {}).get(name, (None, None))
    dataset = "FER+" if tuple(entry.get("classes", ())) == FERPLUS_EMOTIONS else "FER2013"
    split = accuracy.get("split")
    if split and accuracy.get("tta") not in (None, "none"):
        split += f" ({accuracy['tta']} TTA)"
    return Tier(name, arch, dataset, accuracy.get("value"), split, ms if timed_as == (arch, members) else None, members,
                "quantized" in entry, member_archs)


def bundled_tiers(models: dict[str, dict]) -> list[Tier]:
    """Every bundled model (``{name: manifest entry}``), ``default`` first."""
    speeds = measured()
    return [tier(name, models[name], speeds) for name in sorted(models, key=lambda n: (n != "default", n))]


def source_caption() -> str:
    """Where the tiers' numbers come from, for a caption under them."""
    machine = measured().get("machine", {})
    where = f" on {machine.get('cpu', '?')} with {machine.get('usable_cpus', '?')} CPUs" if machine else ""
    return ("Accuracy: the manifest (`ferkit/weights/manifest.json`), measured by `ferkit evaluate` on the split "
            "shown. ms per face: one face, batch 1, one thread, ONNX Runtime median, "
            f"read from `benchmarks/results/infer.json`{where} (`python -m benchmarks.bench_infer`); "
            f"{MISSING} where that file does not list the model.")
