"""Probability calibration by temperature scaling (Guo et al., ICML 2017), and how it is measured.

A network's softmax is usually overconfident; one scalar T fitted on held-out logits
(``softmax(logits / T)``) fixes most of it without changing any prediction. Numpy/scipy only:
used by evaluation, training and inference alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.metrics import log_loss

ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)  # wide enough for any sane network; bounded so a degenerate split cannot run off


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, in float64."""
    return np.exp(log_softmax(np.asarray(logits, np.float64) / temperature, axis=1))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class), the quantity temperature scaling minimises."""
    return float(log_loss(labels, probs, labels=np.arange(probs.shape[1])))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the NLL of ``softmax(logits / T)`` on (logits, labels); searched on log T."""
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
