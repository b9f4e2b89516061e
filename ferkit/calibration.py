"""Probability calibration by temperature scaling (Guo et al., ICML 2017), and how it is measured.

A network's softmax is usually overconfident; one scalar T fitted on held-out logits
(``softmax(logits / T)``) fixes most of it without changing any prediction. Numpy/scipy only:
used by evaluation, training and inference alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

ECE_BINS = 15
UNSURE_RULE = ("unsure below the lowest calibrated confidence at which faces of the fitting split were right at "
               "least half the time (isotonic fit of correct vs confidence)")
MIN_FIT_FACES = 50  # fewer held-out faces than this: no temperature or threshold is fitted (a parent's is kept)
TEMPERATURE_BOUNDS = (0.05, 20.0)  # wide enough for any sane network; bounded so a degenerate split cannot run off


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, in float64."""
    return np.exp(log_softmax(np.asarray(logits, np.float64) / temperature, axis=1))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class), the quantity temperature scaling minimises."""
    from sklearn.metrics import log_loss  # scikit-learn and scipy.optimize load lazily: inference never needs them

    return float(log_loss(labels, probs, labels=np.arange(probs.shape[1])))


def temperature_at_bound(temperature: float) -> bool:
    """True when a fitted T stopped at the search bound: the logits say (almost) nothing about the labels."""
    return bool(np.isclose(temperature, TEMPERATURE_BOUNDS, rtol=1e-3).any())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the NLL of ``softmax(logits / T)`` on (logits, labels); searched on log T."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, labels].mean())

    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


@dataclass
class ReliabilityBins:
    """Top-label confidence in equal-width bins over [0, 1]: per bin count, mean confidence, accuracy."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray  # NaN for empty bins
    accuracy: np.ndarray  # NaN for empty bins

    @property
    def ece(self) -> float:
        filled = self.count > 0
        weights = self.count[filled] / self.count.sum()
        return float(np.sum(weights * np.abs(self.accuracy[filled] - self.confidence[filled])))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityBins:
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.digitize(confidence, edges[1:-1], right=True)  # bin i holds (edges[i], edges[i+1]]
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, n_bins) / count
        accuracy = np.bincount(index, correct, n_bins) / count
    return ReliabilityBins(edges, count, mean_confidence, accuracy)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over confidence bins of (bin share) x |accuracy - mean confidence|."""
    return reliability_bins(probs, labels, n_bins).ece


def fit_unsure_threshold(probs: np.ndarray, labels: np.ndarray, grid: float = 0.01) -> float | None:
    """The "unsure" threshold of UNSURE_RULE: a face whose calibrated top probability is below it was, on the
    fitting split, more often wrong than right. ``probs`` are calibrated; None when there are too few faces.

    The accuracy as a function of confidence comes from an isotonic (monotone) regression, so the threshold
    does not jump with the noise of a few faces; with calibrated probabilities it lands near 0.5.
    """
    from sklearn.isotonic import IsotonicRegression

    labels = np.asarray(labels)
    if len(labels) < MIN_FIT_FACES:
        return None
    confidence = np.asarray(probs, np.float64).max(axis=1)
    correct = (np.asarray(probs).argmax(axis=1) == labels).astype(np.float64)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(confidence, correct)
    candidates = np.arange(0.0, 1.0 + grid / 2, grid)
    right_often = candidates[iso.predict(candidates) >= 0.5]
    return float(round(right_often[0], 2)) if len(right_often) else 1.0


def unsure_summary(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Coverage and accuracy of the sure answers (top probability >= threshold), and accuracy of the unsure ones."""
    confidence = np.asarray(probs).max(axis=1)
    correct = np.asarray(probs).argmax(axis=1) == np.asarray(labels)
    sure = confidence >= threshold
    mean = lambda m: float(correct[m].mean()) if m.any() else None  # noqa: E731
    return {"threshold": float(threshold), "coverage": float(sure.mean()), "accuracy_sure": mean(sure),
            "accuracy_unsure": mean(~sure), "n_sure": int(sure.sum()), "n_unsure": int((~sure).sum())}
