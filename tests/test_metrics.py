"""Tests for medcondense.metrics against hand computations on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from medcondense import metrics


def test_accuracy_and_recall_by_hand():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(6 / 8)
    assert metrics.per_class_recall(y_true, y_pred, 4) == [0.75, 0.5, 1.0, None]
    # Balanced accuracy averages the three measurable recalls: (0.75 + 0.5 + 1) / 3.
    assert metrics.balanced_accuracy(y_true, y_pred, 4) == pytest.approx(0.75)


def test_balanced_accuracy_differs_from_accuracy_on_imbalance():
    y_true = np.array([0] * 9 + [1])
    y_pred = np.zeros(10, dtype=int)  # always the majority class
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(0.9)
    assert metrics.balanced_accuracy(y_true, y_pred, 2) == pytest.approx(0.5)


def test_average_ranks_share_ties():
    ranks = metrics.average_ranks(np.array([0.3, 0.1, 0.3, 0.9, 0.3]))
    assert ranks.tolist() == [3.0, 1.0, 3.0, 5.0, 3.0]


def test_binary_auc_counts_pairs_and_half_ties():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4])
    positive = np.array([False, False, True, True, True])
    # Pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4, 0.4>0.1, 0.4=0.4 (half) -> 4.5 / 6.
    assert metrics.binary_auc(scores, positive) == pytest.approx(4.5 / 6)
    assert metrics.binary_auc(scores, np.ones(5, dtype=bool)) is None
    assert metrics.binary_auc(np.array([1.0, 2.0]), np.array([False, True])) == 1.0
    assert metrics.binary_auc(np.array([2.0, 1.0]), np.array([False, True])) == 0.0


def test_macro_auc_skips_classes_without_positives():
    y_true = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    # class 0 vs rest: positives 0.9, 0.4 against 0.5, 0.2 -> 3 of 4 pairs; class 1 is the mirror.
    assert metrics.macro_auc_ovr(y_true, proba, 3) == pytest.approx(0.75)


def test_classification_metrics_and_summary():
    y_true = np.array([0, 1, 1])
    good = np.array([[0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    bad = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]])
    runs = [metrics.classification_metrics(y_true, p, 2) for p in (good, bad)]
    assert runs[0]["accuracy"] == 1.0 and runs[1]["accuracy"] == pytest.approx(2 / 3)
    summary = metrics.summarize(runs)
    assert summary["accuracy"]["mean"] == pytest.approx(5 / 6)
    assert summary["accuracy"]["std"] == pytest.approx(np.std([1.0, 2 / 3]))
    assert summary["accuracy"]["values"] == [1.0, pytest.approx(2 / 3)]
    assert summary["per_class_recall"]["mean"] == [1.0, 0.75]
    assert summary["per_class_recall"]["std"] == [0.0, 0.25]


def test_summary_of_unmeasurable_values_is_none():
    runs = [{"accuracy": 1.0, "balanced_accuracy": 1.0, "auc": None, "per_class_recall": [1.0, None]}]
    summary = metrics.summarize(runs)
    assert summary["auc"]["mean"] is None
    assert summary["per_class_recall"]["mean"] == [1.0, None]
    assert metrics.ratio(0.5, 0.8) == pytest.approx(0.625)
    assert metrics.ratio(None, 0.8) is None and metrics.ratio(0.5, 0.0) is None
