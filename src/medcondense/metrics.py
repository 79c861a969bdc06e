"""Classification metrics in NumPy (no scikit-learn): accuracy, balanced accuracy, recall, AUC.

All functions take integer labels ``y_true`` [N] and either predicted labels [N] or class
probabilities [N, K]. Conventions:

* per-class recall is ``None`` for a class with no test image (it cannot be measured);
* balanced accuracy is the mean recall over the classes that have test images;
* macro one-vs-rest AUC averages, over the classes with both positive and negative test images,
  the AUC of "this class vs the rest" from the rank formula (Mann-Whitney U) with tied scores
  given their average rank; ``None`` when no class qualifies;
* :func:`summarize` reports mean and *population* std (``ddof=0``, as the reference's
  ``np.std``) over K models.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

SCALAR_METRICS = ("accuracy", "balanced_accuracy", "auc")


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of predictions equal to the label (0.0 for an empty set)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else 0.0


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> list[float | None]:
    """Recall of each class (``None`` where the class has no test image)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recalls: list[float | None] = []
    for k in range(num_classes):
        members = y_true == k
        recalls.append(float((y_pred[members] == k).mean()) if members.any() else None)
    return recalls


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    present = [r for r in per_class_recall(y_true, y_pred, num_classes) if r is not None]
    return float(np.mean(present)) if present else 0.0


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``values``; tied values share the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    start = 0
    while start < values.size:
        stop = start
        while stop + 1 < values.size and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    return ranks


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positive`` via the rank formula; ``None`` if one-sided.

    ``AUC = (sum of positive ranks - P (P + 1) / 2) / (P * Q)`` with P positives and Q negatives,
    which counts a tie between a positive and a negative as one half.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_auc_ovr(y_true: np.ndarray, proba: np.ndarray, num_classes: int) -> float | None:
    """Macro-average of one-vs-rest AUCs over classes that have positives and negatives."""
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    aucs = [binary_auc(proba[:, k], y_true == k) for k in range(num_classes)]
    valid = [a for a in aucs if a is not None]
    return float(np.mean(valid)) if valid else None


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro AUC and per-class recall from class probabilities [N, K]."""
    y_pred = np.asarray(proba).argmax(axis=1)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, num_classes),
        "auc": macro_auc_ovr(y_true, proba, num_classes),
        "per_class_recall": per_class_recall(y_true, y_pred, num_classes),
    }


def _mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None and not math.isnan(v)]
    if not present:
        return {"mean": None, "std": None, "values": list(values)}
    return {"mean": float(np.mean(present)), "std": float(np.std(present)), "values": list(values)}


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over K models of :func:`classification_metrics` results.

    Returns ``{"accuracy": {"mean", "std", "values"}, "balanced_accuracy": ..., "auc": ...,
    "per_class_recall": {"mean": [...], "std": [...]}}`` (``None`` where nothing was measurable).
    """
    summary: dict[str, Any] = {name: _mean_std([run[name] for run in runs]) for name in SCALAR_METRICS}
    num_classes = len(runs[0]["per_class_recall"]) if runs else 0
    per_class = [_mean_std([run["per_class_recall"][k] for run in runs]) for k in range(num_classes)]
    summary["per_class_recall"] = {"mean": [c["mean"] for c in per_class], "std": [c["std"] for c in per_class]}
    return summary


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator / denominator)
