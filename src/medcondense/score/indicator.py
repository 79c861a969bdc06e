"""The paper's indicator: how well does a random real subset at the target IPC already do?

Li et al. 2024 (arXiv 2407.14429) found that the benefit of distillation over a random real
subset shrinks where random subsets already do well. We train ``repeats`` fresh ConvNets on
random subsets of ``ipc`` train images per class (the reference protocol of :mod:`medcondense.train`)
and test them on the test split; the ratio to a ConvNet trained on the whole train split is
the indicator (1 = a random subset is as good as all data: little left for distillation to win).

The full-data model gets a bounded budget: ``min(epochs, ceil(full_steps / batches per epoch))``
epochs, i.e. at most about ``full_steps`` SGD steps (default 2000), because 300 epochs over a
large train split would cost more than the whole rest of ``score``. It is trained once.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from medcondense.nets import build_net
from medcondense.train import TrainSettings, predict_proba, train_classifier

log = logging.getLogger(__name__)


def subset_index(labels: np.ndarray, ipc: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``ipc`` random images of every class (all images of a class with fewer)."""
    picks = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        picks.append(rng.choice(idx, size=min(ipc, idx.size), replace=False))
    return np.sort(np.concatenate(picks))


def _accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: np.ndarray,
    num_classes: int, settings: TrainSettings, seed: int,
) -> float:
    """Train one fresh ConvNet (seeded) and return its test accuracy."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net("convnet", train_x.shape[1], num_classes, train_x.shape[-1])
    net = net.to(train_x.device)
    train_classifier(net, train_x, train_y, settings, generator=torch.Generator().manual_seed(seed))
    proba = predict_proba(net, test_x)
    return float((proba.argmax(axis=1) == test_y).mean())


def full_budget(settings: TrainSettings, n_train: int, full_steps: int) -> TrainSettings:
    """The settings for the full-data model: the same, with epochs capped at ~``full_steps`` SGD steps."""
    batches = max(1, math.ceil(n_train / settings.batch_size))
    epochs = max(1, min(settings.epochs, math.ceil(full_steps / batches)))
    return TrainSettings(epochs=epochs, lr=settings.lr, momentum=settings.momentum,
                         weight_decay=settings.weight_decay, batch_size=settings.batch_size)


def full_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: np.ndarray,
    num_classes: int, settings: TrainSettings, full_steps: int, seed: int,
) -> dict:
    """Test accuracy of one ConvNet trained on the whole train split within the step budget."""
    budget = full_budget(settings, train_x.shape[0], full_steps)
    acc = _accuracy(train_x, train_y, test_x, test_y, num_classes, budget, seed)
    return {"accuracy": round(acc, 6), "epochs": budget.epochs, "n_train": int(train_x.shape[0])}


def random_subset_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: np.ndarray,
    num_classes: int, ipc: int, repeats: int, settings: TrainSettings, seed: int,
) -> dict:
    """Mean and std test accuracy over ``repeats`` random subsets of ``ipc`` images per class."""
    labels = train_y.cpu().numpy()
    rng = np.random.default_rng([seed, ipc])
    accs = []
    for r in range(repeats):
        idx = torch.as_tensor(subset_index(labels, ipc, rng), device=train_x.device)
        accs.append(_accuracy(train_x[idx], train_y[idx], test_x, test_y, num_classes, settings, seed + 1000 * r + ipc))
        log.debug("random subset ipc=%d repeat %d: accuracy %.3f", ipc, r, accs[-1])
    return {
        "mean": round(float(np.mean(accs)), 6),
        "std": round(float(np.std(accs)), 6),
        "runs": [round(a, 6) for a in accs],
    }
