"""Honest evaluation: metrics, calibration, ensemble weights and the report folder of ``ferkit evaluate``.

Everything here takes numpy arrays (no torch), so ``ferkit train`` on a GPU machine and
``ferkit evaluate`` on a laptop write the same reports. Probabilities are calibrated by one
temperature T fitted on PublicTest (``softmax(logits / T)``, Guo et al. 2017) and applied to the
evaluated split; T is never fitted on the split being reported unless that split is PublicTest itself.

Logits file (``ferkit evaluate --probs FILE.npz``; written by ``write_logits_npz``), one .npz with

- ``classes``: (C,) str, class names in output order;
- ``{split}_logits``: (N, C) float32, uncalibrated logits of one split (``PublicTest``, ``PrivateTest``);
  or per TTA mode ``{split}_logits_{tta}`` (``PrivateTest_logits_flip``), preferred when ``--tta`` names it;
- ``{split}_labels``: (N,) int64, true class indices of that split;
- optional 0-d str arrays ``model`` (name), ``model_sha256`` (of the model file), ``tta`` (mode used).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
    top_k_accuracy_score,
)

from . import __version__
from .calibration import (
    ECE_BINS,
    TEMPERATURE_BOUNDS,
    UNSURE_RULE,
    temperature_at_bound,
    ReliabilityBins,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    softmax,
    unsure_summary,
)
from .errors import DataError, ModelError
from .fileio import atomic_open, atomic_path, read_npz, sha256_of, write_text
from .labels import SPLITS
from .tta import TTA_MODES

ENSEMBLE_STEP = 0.05  # weights are multiples of this (20 greedy picks)
PROGRESS_CHUNK = 1024  # faces per progress-bar step; the Recognizer batches within it
CALIBRATION_SPLIT = "PublicTest"
FOLDER_SPLIT = "folder"  # the split name of --data-folder faces
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
CONFUSION_PNG = "confusion_matrix.png"
ROC_PNG = "roc_curves.png"
RELIABILITY_PNG = "reliability.png"
_DPI = 120


# --- metrics ---------------------------------------------------------------------------------


def _per_class_auc(probs: np.ndarray, labels: np.ndarray) -> list[float | None]:
    """One-vs-rest ROC AUC per class; None where the split has no positives (or no negatives)."""
    aucs: list[float | None] = []
    for k in range(probs.shape[1]):
        positive = labels == k
        aucs.append(float(roc_auc_score(positive, probs[:, k])) if 0 < positive.sum() < len(labels) else None)
    return aucs


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support/AUC, macro and weighted averages, confusion, NLL, ECE."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    if probs.ndim != 2 or probs.shape != (len(labels), len(classes)):
        raise ValueError(f"probs {probs.shape} must be (N, C) = ({len(labels)}, {len(classes)})")
    class_ids = np.arange(len(classes))
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=class_ids, zero_division=0)
    aucs = _per_class_auc(probs, labels)
    averages = {}
    seen = np.union1d(labels, predicted)  # averages over the classes in play, not the ones a folder lacks
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(labels, predicted, labels=seen, average=average,
                                                     zero_division=0)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    defined = [k for k, a in enumerate(aucs) if a is not None]
    defined_aucs = np.array([aucs[k] for k in defined])
    averages["macro"]["roc_auc"] = float(defined_aucs.mean()) if defined else None
    averages["weighted"]["roc_auc"] = float(np.average(defined_aucs, weights=support[defined])) if defined else None
    return {
        "n": int(len(labels)),
        "classes": list(classes),
        "accuracy": float(accuracy_score(labels, predicted)),
        # with two classes the top-2 always holds the truth (and scikit-learn refuses k=2 on binary labels)
        "top2_accuracy": float(top_k_accuracy_score(labels, probs, k=2, labels=class_ids)) if len(classes) > 2 else 1.0,
        "per_class": {
            name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                   "support": int(support[k]), "roc_auc": aucs[k]}
            for k, name in enumerate(classes)
        },
        **averages,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=class_ids).tolist(),
        "nll": negative_log_likelihood(probs, labels),
        "ece": expected_calibration_error(probs, labels),
    }


# --- figures ---------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=_DPI, bbox_inches="tight")


def plot_confusion_matrix(confusion: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                          title: str = "") -> Path:
    """Counts and row-normalised (recall per true class) confusion matrices side by side."""
    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    fig = Figure(figsize=(13, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, matrix, fmt, name in ((axes[0], confusion, "d", "counts"),
                                  (axes[1], normalised, ".2f", "row-normalised (recall)")):
        ConfusionMatrixDisplay(matrix, display_labels=list(classes)).plot(
            ax=ax, cmap="Blues", colorbar=False, values_format=fmt, xticks_rotation=45)
        ax.set_title(name)
    fig.suptitle(f"Confusion matrix: {title}" if title else "Confusion matrix")
    _save(fig, Path(path))
    return Path(path)


def plot_roc_curves(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                    title: str = "") -> Path:
    """One one-vs-rest ROC curve per class, AUC in the legend; classes absent from the split are listed as n/a."""
    fig = Figure(figsize=(6.5, 6), layout="constrained")
    ax = fig.subplots()
    for k, (name, auc) in enumerate(zip(classes, _per_class_auc(probs, labels))):
        if auc is None:
            ax.plot([], [], label=f"{name} (AUC n/a: no examples)")
            continue
        fpr, tpr, _ = roc_curve(labels == k, probs[:, k])
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
           title=f"ROC, one class vs rest: {title}" if title else "ROC, one class vs rest")
    ax.legend(loc="lower right", fontsize=9)
    ax.grid(alpha=0.3)
    _save(fig, Path(path))
    return Path(path)


def _plot_reliability_panel(ax, bins: ReliabilityBins, name: str) -> None:
    left, width, filled = bins.edges[:-1], np.diff(bins.edges), bins.count > 0
    accuracy, confidence = bins.accuracy[filled], bins.confidence[filled]
    ax.bar(left[filled], accuracy, width=width[filled], align="edge", edgecolor="black", color="tab:blue",
           alpha=0.8, label="accuracy")
    ax.bar(left[filled], np.abs(confidence - accuracy), bottom=np.minimum(confidence, accuracy),
           width=width[filled], align="edge", edgecolor="tab:red", fill=False, hatch="//",
           label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    share = ax.twinx()
    share.stairs(bins.count / bins.count.sum(), bins.edges, color="tab:orange", lw=1.5, label="share of faces")
    share.set_ylim(0, 1)
    share.set_ylabel("share of faces in bin", color="tab:orange")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
           title=f"{name}: ECE = {bins.ece:.4f}")
    handles = ax.get_legend_handles_labels()[0] + share.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8)


def plot_reliability(panels: dict[str, np.ndarray], labels: np.ndarray, path: str | os.PathLike,
                     n_bins: int = ECE_BINS, title: str = "") -> Path:
    """Reliability diagrams, one panel per named probability array (e.g. before / after temperature)."""
    fig = Figure(figsize=(5.5 * len(panels), 5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, probs) in zip(axes, panels.items()):
        _plot_reliability_panel(ax, reliability_bins(probs, labels, n_bins), name)
    fig.suptitle(f"Reliability: {title}" if title else "Reliability")
    _save(fig, Path(path))
    return Path(path)


# --- the report folder -----------------------------------------------------------------------


def _calibration_section(logits: np.ndarray, labels: np.ndarray, calibration_logits: np.ndarray,
                         calibration_labels: np.ndarray, fitted_on: str, temperature: float | None = None,
                         note: str = "") -> tuple[dict, np.ndarray]:
    """ECE/NLL before and after temperature scaling; T fitted on the calibration data unless ``temperature`` given."""
    fitted = temperature is None
    if fitted:
        temperature = fit_temperature(calibration_logits, calibration_labels)
    before, after = softmax(logits), softmax(logits, temperature)
    return {
        "temperature": temperature,
        "temperature_fitted": fitted,
        "temperature_note": note,
        "temperature_at_search_bound": fitted and temperature_at_bound(temperature),
        "fitted_on": fitted_on,
        "fitted_on_n": int(len(calibration_labels)),
        "ece_before": expected_calibration_error(before, labels),
        "ece_after": expected_calibration_error(after, labels),
        "nll_before": negative_log_likelihood(before, labels),
        "nll_after": negative_log_likelihood(after, labels),
    }, after


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _unsure_lines(unsure: dict | None) -> list[str]:
    if not unsure:
        return []
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    return ["", "## Sure and unsure answers", "",
            f"Threshold **{unsure['threshold']:.2f}** (the model's; rule: {unsure['rule']}).", "",
            "| | faces | share | accuracy |", "| --- | ---: | ---: | ---: |",
            f"| sure (top probability >= {unsure['threshold']:.2f}) | {unsure['n_sure']} | {pct(unsure['coverage'])} | "
            f"{pct(unsure['accuracy_sure'])} |",
            f"| unsure | {unsure['n_unsure']} | {pct(1 - unsure['coverage'])} | {pct(unsure['accuracy_unsure'])} |"]


def _markdown(metrics: dict, title: str) -> str:
    run = metrics.get("run", {})
    lines = [f"# {title}", "", "| | |", "| --- | --- |"]
    lines += [f"| {key} | `{value}` |" for key, value in run.items() if not isinstance(value, (dict, list))]
    lines += ["", "## Accuracy", "",
              f"- accuracy: **{metrics['accuracy']:.4f}** on {metrics['n']} faces "
              f"(top-2: {metrics['top2_accuracy']:.4f})",
              f"- macro F1: **{metrics['macro']['f1']:.4f}**, macro one-vs-rest ROC AUC: "
              f"{_fmt(metrics['macro']['roc_auc'])}",
              f"- NLL: {metrics['nll']:.4f}, ECE ({ECE_BINS} bins): {metrics['ece']:.4f}", "",
              "## Per class", "",
              "| class | precision | recall | F1 | ROC AUC | support |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in metrics["per_class"].items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
                     f"{_fmt(row['roc_auc'])} | {row['support']} |")
    for average in ("macro", "weighted"):
        row = metrics[average]
        lines.append(f"| *{average} avg* | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
                     f"{_fmt(row.get('roc_auc'))} | {metrics['n']} |")
    calibration = metrics.get("calibration")
    lines += ["", "## Calibration", ""]
    if calibration:
        same = " (the evaluated split itself)" if calibration["fitted_on"] == run.get("split") else ""
        how = (f"fitted on {calibration['fitted_on']}{same} ({calibration['fitted_on_n']} faces)"
               if calibration.get("temperature_fitted", True) else f"the model's own, not fitted here: "
               f"{calibration['temperature_note']}")
        lines += [f"Temperature **T = {calibration['temperature']:.4f}** {how}, applied to this split; the metrics "
                  "above use the calibrated probabilities softmax(logits / T).", "",
                  "| | ECE | NLL |", "| --- | ---: | ---: |",
                  f"| before (T = 1) | {calibration['ece_before']:.4f} | {calibration['nll_before']:.4f} |",
                  f"| after (T = {calibration['temperature']:.3f}) | {calibration['ece_after']:.4f} | "
                  f"{calibration['nll_after']:.4f} |"]
        if calibration["temperature_at_search_bound"]:
            lines += ["", f"**Warning:** T stopped at the search bound {TEMPERATURE_BOUNDS}: the logits carry "
                          "(almost) no information about the labels, or the calibration split is degenerate."]
    else:
        lines.append("No calibration split given: the probabilities are reported as the model gave them.")
    lines += _unsure_lines(metrics.get("unsure"))
    lines += ["", "## Figures", "",
              f"![confusion matrix]({CONFUSION_PNG})", "", f"![ROC curves]({ROC_PNG})", "",
              f"![reliability diagram]({RELIABILITY_PNG})", "",
              f"All numbers: [{METRICS_FILE}]({METRICS_FILE}).", ""]
    return "\n".join(lines)


def evaluation_report(probs: np.ndarray | None, labels: np.ndarray, classes: Sequence[str],
                      out_dir: str | os.PathLike, *, title: str, logits: np.ndarray | None = None,
                      calibration_logits: np.ndarray | None = None, calibration_labels: np.ndarray | None = None,
                      calibration_split: str = CALIBRATION_SPLIT, extra: dict | None = None,
                      unsure_threshold: float | None = None, temperature: float | None = None,
                      temperature_note: str = "") -> dict:
    """Write ``metrics.json``, ``report.md`` and the PNGs into ``out_dir``; return the metrics dict.

    ``probs`` are the model's probabilities, or None when ``logits`` are given (probs = softmax(logits)).
    With ``logits`` and calibration logits/labels, a temperature is fitted on the calibration data and
    the metrics are computed on softmax(logits / T), with ECE/NLL before and after under ``calibration``.
    ``extra`` (model, SHA-256, split, TTA, command...) is stored under ``run`` and heads the report.
    ``unsure_threshold`` (the model's) adds the coverage and accuracy of its sure and unsure answers.
    ``temperature``: use this T instead of fitting one (a split too small to calibrate on), said in the report.
    """
    labels = np.asarray(labels, np.int64)
    if probs is None:
        if logits is None:
            raise ValueError("evaluation_report needs probs or logits")
        probs = softmax(logits)
    probs = np.asarray(probs, np.float64)
    panels = {"uncalibrated": probs}
    calibration = None
    if logits is not None and calibration_logits is not None and calibration_labels is not None:
        calibration, calibrated = _calibration_section(logits, labels, calibration_logits,
                                                       np.asarray(calibration_labels, np.int64), calibration_split,
                                                       temperature, temperature_note)
        panels = {"before (T = 1)": probs, f"after (T = {calibration['temperature']:.3f})": calibrated}
        probs = calibrated
    metrics = classification_metrics(probs, labels, classes)
    if calibration:
        metrics["calibration"] = calibration
    if unsure_threshold is not None:
        metrics["unsure"] = unsure_summary(probs, labels, unsure_threshold) | {"rule": UNSURE_RULE}
    run = dict(extra or {})
    run.setdefault("date", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    metrics["run"] = run
    metrics["files"] = {"report": REPORT_FILE, "confusion_matrix": CONFUSION_PNG, "roc": ROC_PNG,
                        "reliability": RELIABILITY_PNG}

    out = Path(out_dir)
    plot_confusion_matrix(np.array(metrics["confusion_matrix"]), classes, out / CONFUSION_PNG, title)
    plot_roc_curves(probs, labels, classes, out / ROC_PNG, title)
    plot_reliability(panels, labels, out / RELIABILITY_PNG, title=title)
    write_text(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    write_text(out / REPORT_FILE, _markdown(metrics, title))
    return metrics


# --- ensembles -------------------------------------------------------------------------------


def ensemble_probs(prob_list: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted average of several models' (N, C) probabilities."""
    return np.tensordot(np.asarray(weights, np.float64), np.stack(prob_list).astype(np.float64), axes=1)


def choose_ensemble_weights(prob_list: Sequence[np.ndarray], labels: np.ndarray, *,
                            step: float = ENSEMBLE_STEP, sizes: Sequence[float] | None = None,
                            budget: float | None = None) -> np.ndarray:
    """Weights (summing to 1, multiples of ``step``) for averaging the models' probabilities.

    Greedy forward selection with replacement (Caruana et al., ICML 2004): start empty, and
    round(1 / step) times add the model whose inclusion gives the lowest NLL of the running average
    on (prob_list, labels); ties go to the lower index, so the result is deterministic. The first
    pick is the best single model. Pass calibrated probabilities (each model's softmax(logits / T)),
    else mixing in a weak model can lower the NLL merely by softening an overconfident one.
    With ``sizes`` and ``budget`` (e.g. parameter counts and the most a bundled file may hold), a model
    not yet picked is a candidate only while the picked models' sizes and its own sum to at most ``budget``.
    Choose on PublicTest, report on PrivateTest.
    """
    labels = np.asarray(labels, np.int64)
    true = np.stack(prob_list).astype(np.float64)[:, np.arange(len(labels)), labels]  # (M, N): p(true class)
    sizes = np.zeros(len(true)) if sizes is None else np.asarray(sizes, np.float64)
    if budget is not None and sizes.min() > budget:
        raise ValueError(f"every model is over the budget of {budget:g} (the smallest is {sizes.min():g})")
    counts = np.zeros(len(true), np.int64)
    running = np.zeros(true.shape[1])
    for n in range(max(1, int(round(1.0 / step)))):
        candidates = (running * n + true) / (n + 1)  # (M, N): the average if model m were added
        nll = -np.log(np.clip(candidates, 1e-12, None)).mean(axis=1)
        if budget is not None:
            nll[(counts == 0) & (sizes[counts > 0].sum() + sizes > budget)] = np.inf
        best = int(np.argmin(nll))
        counts[best] += 1
        running = candidates[best]
    return counts / counts.sum()


# --- logits files ----------------------------------------------------------------------------


def split_logits_arrays(split: str, logits: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{split}_logits``, or ``{split}_logits_{tta}`` for each mode when ``logits`` maps TTA mode -> logits."""
    if isinstance(logits, dict):
        return {f"{split}_logits_{tta}": np.asarray(values, np.float32) for tta, values in logits.items()}
    return {f"{split}_logits": np.asarray(logits, np.float32)}


def write_logits_npz(path: str | os.PathLike, classes: Sequence[str],
                     splits: dict[str, tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]], *,
                     model: str | None = None, model_sha256: str | None = None, tta: str | None = None) -> Path:
    """Write the logits file of the module docstring, atomically; ``splits`` maps split name -> (logits, labels),
    the logits one array or a dict TTA mode -> array (one file holding every mode, as ``ferkit train`` saves)."""
    arrays: dict[str, np.ndarray] = {"classes": np.array(list(classes), dtype=str)}
    for split, (logits, labels) in splits.items():
        arrays |= split_logits_arrays(split, logits)
        arrays[f"{split}_labels"] = np.asarray(labels, np.int64)
    for key, value in (("model", model), ("model_sha256", model_sha256), ("tta", tta)):
        if value is not None:
            arrays[key] = np.array(value, dtype=str)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


@dataclass
class LogitsSource:
    """One model's logits on the splits an evaluation needs, from an ONNX model or a logits file."""

    name: str
    classes: tuple[str, ...]
    sha256: str
    logits: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)


def _logits_key(arrays: dict, split: str, tta: str) -> str | None:
    return next((key for key in (f"{split}_logits_{tta}", f"{split}_logits") if key in arrays), None)


def read_logits_npz(path: str | os.PathLike, splits: Sequence[str], tta: str = "none") -> LogitsSource:
    """Read a logits file, checking it holds every split in ``splits``; DataError says what is missing.

    ``{split}_logits_{tta}`` (one file holding every TTA mode, as ``ferkit train`` saves) is preferred
    over ``{split}_logits``.
    """
    path = Path(path)
    arrays = read_npz(path, "logits file", " (see `pydoc ferkit.evaluate`)")
    keys = {split: _logits_key(arrays, split, tta) for split in splits}
    missing = ["classes"] if "classes" not in arrays else []
    missing += [f"{s}_logits[_{tta}]" for s, key in keys.items() if key is None]
    missing += [f"{s}_labels" for s in splits if f"{s}_labels" not in arrays]
    if missing:
        raise DataError(f"logits file {path} lacks {', '.join(missing)} (it holds {', '.join(sorted(arrays))})")
    classes = tuple(str(c) for c in arrays["classes"])
    for split, key in keys.items():
        logits, labels = arrays[key], arrays[f"{split}_labels"]
        if logits.ndim != 2 or logits.shape != (len(labels), len(classes)):
            raise DataError(f"logits file {path}: {key} is {logits.shape}, expected "
                            f"({len(labels)}, {len(classes)}) to match {split}_labels and classes")
    info = {key: str(arrays[key]) for key in ("model", "model_sha256", "tta") if key in arrays}
    if all(key.endswith(f"_logits_{tta}") for key in keys.values()):
        info["tta"] = tta
    return LogitsSource(
        name=info.get("model", path.stem), classes=classes, sha256=info.get("model_sha256", "not recorded"),
        logits={s: arrays[key].astype(np.float32) for s, key in keys.items()},
        labels={s: arrays[f"{s}_labels"].astype(np.int64) for s in splits},
        info={"logits_file": str(path), "logits_file_sha256": sha256_of(path),
              "tta": info.get("tta", "not recorded")},
    )


# --- logits from ONNX models -----------------------------------------------------------------


def batched_logits(recognizer, faces: np.ndarray, tta: str, desc: str) -> np.ndarray:
    """Uncalibrated logits of pre-cropped faces (N, H, W) through ``recognizer.logits_faces``, with progress."""
    from tqdm import tqdm

    starts = range(0, len(faces), PROGRESS_CHUNK)
    chunks = [recognizer.logits_faces(faces[i:i + PROGRESS_CHUNK], tta=tta)
              for i in tqdm(starts, desc=desc, unit="chunk", disable=None, leave=False)]
    return np.concatenate(chunks).astype(np.float32)


def _dataset_name(classes: tuple[str, ...], args: argparse.Namespace) -> str:
    return "FER+" if args.ferplus or "contempt" in classes else "FER2013"


def _load_faces(split: str, classes: tuple[str, ...], args: argparse.Namespace):
    """The split's faces with the labels the model's classes call for; a class mismatch is a ModelError."""
    from . import data

    ferplus = _dataset_name(classes, args) == "FER+"
    faces = data.load_ferplus_split(split, args.data) if ferplus else data.load_split(split, args.data)
    if tuple(faces.classes) != classes:
        raise ModelError(f"the model's classes {', '.join(classes)} do not match the "
                         f"{'FER+' if ferplus else 'FER2013'} labels {', '.join(faces.classes)}"
                         f"{'' if ferplus else ' (use --ferplus for an 8-class FER+ model)'}")
    if args.limit:
        faces = faces.subset(np.arange(min(args.limit, len(faces))))
    return faces


def folder_faces(root: str, recognizer) -> tuple[np.ndarray, np.ndarray]:
    """A user's labelled folder DIR/<class>/*: faces detected and cropped as the model frames them, labels as
    indices of the model's classes. A class folder the model does not know is a DataError naming it."""
    from .userdata import load_face_folder

    faces = load_face_folder(root, size=recognizer.meta["input_size"], margin=recognizer.meta["face_margin"])
    unknown = [c for c in faces.classes if c not in recognizer.classes]
    if unknown:
        raise DataError(f"{root} has class folders the model does not predict: {', '.join(unknown)} "
                        f"(it predicts {', '.join(recognizer.classes)})")
    order = np.array([list(recognizer.classes).index(c) for c in faces.classes])
    return faces.images, order[faces.labels]


def onnx_sources(models: Sequence[str], splits: Sequence[str], args: argparse.Namespace) -> list[LogitsSource]:
    """Logits of each model (bundled name or .onnx path) on ``splits``, through the Recognizer."""
    from . import infer  # onnxruntime loads here, not when the report functions are imported

    loaded = [infer.load(m, batch_size=args.batch_size or infer.BATCH_SIZE) for m in models]
    classes = tuple(loaded[0].classes)
    for model, recognizer in zip(models, loaded):
        if tuple(recognizer.classes) != classes:
            raise ModelError(f"ensemble members disagree on classes: {models[0]} has {', '.join(classes)}, "
                             f"{model} has {', '.join(recognizer.classes)}")
    if args.data_folder:
        images, labels = folder_faces(args.data_folder, loaded[0])
        faces = {FOLDER_SPLIT: argparse.Namespace(images=images, labels=labels)}
    else:
        faces = {split: _load_faces(split, classes, args) for split in splits}
    sources = []
    for model, recognizer in zip(models, loaded):
        path = Path(recognizer.source)
        name = path.stem if Path(model).expanduser().is_file() else str(model)
        sources.append(LogitsSource(
            name=name, classes=classes, sha256=sha256_of(path),
            logits={split: batched_logits(recognizer, f.images, args.tta, f"{name} {split}")
                    for split, f in faces.items()},
            labels={split: f.labels for split, f in faces.items()},
            info={"model_file": str(path), "tta": args.tta, "dataset": _dataset_name(classes, args),
                  "temperature_in_model": recognizer.temperature,
                  "unsure_threshold_in_model": recognizer.unsure_threshold},
        ))
    return sources


# --- CLI -------------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferkit evaluate",
        description="Evaluate a model (or an ensemble) on a FER2013 / FER+ split: accuracy, per-class "
                    "precision/recall/F1, confusion matrix, ROC per class, calibration before/after temperature.",
    )
    parser.add_argument("model", nargs="?",
                        help="bundled model name (default, ferplus) or path to an .onnx file (default: default)")
    parser.add_argument("--ensemble", nargs="+", metavar="MODEL",
                        help="several models (names or .onnx paths); weights chosen on --calibrate-on (default: none)")
    parser.add_argument("--probs", nargs="+", metavar="FILE.npz",
                        help="precomputed logits files (layout in `pydoc ferkit.evaluate`); several = ensemble "
                             "(default: none)")
    parser.add_argument("--split", default="PrivateTest", choices=SPLITS,
                        help="split to report on (default: PrivateTest)")
    parser.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation (default: none)")
    parser.add_argument("--data", help="FER2013 folder (default: $FERKIT_DATA or ../shared/data/fer2013)")
    parser.add_argument("--data-folder", metavar="DIR",
                        help="evaluate on your own labelled images DIR/<class>/*.jpg instead of a FER2013 split "
                             "(faces found and cropped as at inference; no calibration fitted) (default: none)")
    parser.add_argument("--out", help="report folder (default: runs/eval/<model>-<split>[-<tta>])")
    parser.add_argument("--ferplus", action="store_true",
                        help="use FER+ labels (default: off; automatic when the model's classes include contempt)")
    parser.add_argument("--calibrate-on", default=CALIBRATION_SPLIT, choices=("PublicTest", "PrivateTest", "none"),
                        help="split to fit the temperature (and ensemble weights) on (default: PublicTest)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="use only the first N faces of each split (smoke tests; default: all)")
    parser.add_argument("--batch-size", type=int, help="faces per ONNX Runtime call (default: the Recognizer's)")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.data_folder:
        if args.ensemble or args.probs:
            parser.error("--data-folder evaluates one model (MODEL), not --ensemble or --probs")
        args.split, args.calibrate_on = FOLDER_SPLIT, "none"
    given = [name for name in ("model", "ensemble", "probs") if getattr(args, name)]
    if len(given) > 1:
        parser.error("give one of MODEL, --ensemble A.onnx B.onnx ..., --probs FILE.npz")
    if not given:
        args.model = "default"
    if args.ensemble and len(args.ensemble) < 2:
        parser.error("--ensemble needs at least two models")
    if args.calibrate_on == args.split and args.split != CALIBRATION_SPLIT:
        parser.error(f"--calibrate-on {args.calibrate_on} would fit on the split being reported; "
                     f"use {CALIBRATION_SPLIT}")
    if (args.ensemble or (args.probs and len(args.probs) > 1)) and args.calibrate_on == "none":
        parser.error("an ensemble needs --calibrate-on SPLIT to choose its weights")
    if args.limit < 0 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--limit must be >= 0 and --batch-size >= 1")


def _ensemble(sources: list[LogitsSource], split: str, calibrate_on: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Ensemble 'logits' (log of the weighted average of calibrated probabilities) on both splits + details."""
    labels = sources[0].labels[calibrate_on]
    temperatures = [fit_temperature(s.logits[calibrate_on], labels) for s in sources]
    calibrated = {sp: [softmax(s.logits[sp], t) for s, t in zip(sources, temperatures)]
                  for sp in (split, calibrate_on)}
    weights = choose_ensemble_weights(calibrated[calibrate_on], labels)
    logits = {sp: np.log(np.clip(ensemble_probs(p, weights), 1e-12, None)) for sp, p in calibrated.items()}
    members = [{"model": s.name, "sha256": s.sha256, "temperature": t, "weight": float(w)}
               for s, t, w in zip(sources, temperatures, weights)]
    return logits[split], logits[calibrate_on], {"members": members, "weights_chosen_on": calibrate_on,
                                                 "weights_method": "Caruana greedy forward selection, NLL"}


def _check_same_labels(sources: list[LogitsSource], splits: Sequence[str]) -> None:
    for source in sources[1:]:
        if source.classes != sources[0].classes:
            raise DataError(f"{source.name} has classes {source.classes}, {sources[0].name} has {sources[0].classes}")
        for split in splits:
            if not np.array_equal(source.labels[split], sources[0].labels[split]):
                raise DataError(f"{source.name} and {sources[0].name} hold different {split} labels: "
                                "the logits were computed on different faces")


def _summary(metrics: dict, out: Path) -> str:
    run = metrics["run"]
    lines = [f"{run['model']} on {run['split']}: {metrics['n']} faces, TTA {run.get('tta', 'n/a')}",
             f"accuracy  {metrics['accuracy']:.4f}   macro F1  {metrics['macro']['f1']:.4f}   "
             f"macro AUC  {_fmt(metrics['macro']['roc_auc'])}"]
    calibration = metrics.get("calibration")
    if calibration:
        bound = ", at the search bound: the logits say ~nothing" if calibration["temperature_at_search_bound"] else ""
        lines.append(f"ECE       {calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f} "
                     f"(T = {calibration['temperature']:.3f} fitted on {calibration['fitted_on']}{bound})")
    else:
        lines.append(f"ECE       {metrics['ece']:.4f} (no calibration)")
    width = max(map(len, metrics["per_class"]))
    lines.append(f"{'class':<{width}}  F1      support")
    lines += [f"{name:<{width}}  {row['f1']:.4f}  {row['support']:>7}" for name, row in metrics["per_class"].items()]
    lines.append(f"report: {out / REPORT_FILE}")
    return "\n".join(lines)


def _collect_sources(args: argparse.Namespace, splits: list[str]) -> list[LogitsSource]:
    if not args.probs:
        return onnx_sources(args.ensemble or [args.model], splits, args)
    sources = [read_logits_npz(p, splits, args.tta) for p in args.probs]
    if args.limit:
        for source in sources:
            source.logits = {split: v[:args.limit] for split, v in source.logits.items()}
            source.labels = {split: v[:args.limit] for split, v in source.labels.items()}
    return sources


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = get_args_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    calibrate_on = None if args.calibrate_on == "none" else args.calibrate_on
    splits = list(dict.fromkeys([args.split] + ([calibrate_on] if calibrate_on else [])))
    sources = _collect_sources(args, splits)
    _check_same_labels(sources, splits)

    first = sources[0]
    if len(sources) == 1:
        name, sha = first.name, first.sha256
        logits = first.logits[args.split]
        calibration_logits = first.logits[calibrate_on] if calibrate_on else None
        details = {k: v for k, v in first.info.items() if k != "tta"}
    else:
        name, sha = f"ensemble{len(sources)}", " ".join(s.sha256 for s in sources)
        logits, calibration_logits, ensemble = _ensemble(sources, args.split, calibrate_on)
        details = {"ensemble": ensemble}
    tta = first.info.get("tta", args.tta)
    run = {"model": name, "model_sha256": sha, "split": args.split, "tta": tta,
           "command": shlex.join(["ferkit", "evaluate", *argv]),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "ferkit": __version__,
           "n": int(len(first.labels[args.split])), **({"limit": args.limit} if args.limit else {}), **details}
    out = Path(args.out) if args.out else Path("runs") / "eval" / (
        f"{name}-{args.split}" + ("" if tta == "none" else f"-{tta}".replace(" ", "-")))
    metrics = evaluation_report(
        None, first.labels[args.split], first.classes, out, title=f"{name} on {args.split}", logits=logits,
        calibration_logits=calibration_logits, calibration_split=calibrate_on or CALIBRATION_SPLIT,
        calibration_labels=first.labels[calibrate_on] if calibrate_on else None, extra=run,
        unsure_threshold=first.info.get("unsure_threshold_in_model") if len(sources) == 1 else None)
    print(_summary(metrics, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
