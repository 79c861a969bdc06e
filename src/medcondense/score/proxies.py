"""Cheap proxies for the paper's indicator: separability and coverage in random-ConvNet space.

None of these trains anything; all run on embeddings from :mod:`medcondense.score.embedding`
(L2-normalised rows, one set per random net) and are averaged over the nets. Two registries:

``PROXIES`` (independent of the IPC)
    ``fisher_ratio``      between-class / within-class scatter (higher = more separable)
    ``knn_accuracy``      leave-one-out 5-NN accuracy on the train split
    ``intra_diversity``   mean within-class distance / mean distance over all pairs
                          (near 1 = classes as spread as the whole set, hard to summarise)
``IPC_PROXIES`` (measured at each target IPC)
    ``prototype_accuracy``  nearest-class-mean accuracy on the test split when the class means
                            come from a random subset of IPC images per class (a training-free
                            twin of the paper's indicator)
    ``prototype_ratio``     the same, divided by the nearest-class-mean accuracy from all images
    ``kcenter_radius``      greedy k-center with IPC centres per class: the largest distance from
                            a class member to its nearest centre, over the mean within-class
                            distance (lower = IPC images can cover the class)

Each is timed with ``time.perf_counter`` (the shared embedding cost is reported once, apart).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class Embedded:
    """Train/test embeddings of the real set, one tensor per random net (unit rows, on the device)."""

    train: list[torch.Tensor]
    train_labels: torch.Tensor
    test: list[torch.Tensor]
    test_labels: torch.Tensor
    num_classes: int


def _class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[K, D] mean feature of each class (zeros for an empty class)."""
    sums = torch.zeros(num_classes, features.shape[1], device=features.device)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).unsqueeze(1)
    return sums / counts


def fisher_ratio(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """tr(S_between) / tr(S_within) of the features."""
    means = _class_means(features, labels, num_classes)
    centre = features.mean(dim=0)
    counts = torch.bincount(labels, minlength=num_classes).float()
    between = (counts * ((means - centre) ** 2).sum(dim=1)).sum()
    within = ((features - means[labels]) ** 2).sum()
    return float(between / within.clamp_min(1e-12))


def knn_accuracy(features: torch.Tensor, labels: torch.Tensor, num_classes: int, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy (majority vote, Euclidean on unit rows)."""
    n = features.shape[0]
    if n < 2:
        return float("nan")
    dist = torch.cdist(features, features)
    dist.fill_diagonal_(float("inf"))
    neighbours = dist.topk(min(k, n - 1), largest=False).indices
    votes = torch.zeros(n, num_classes, device=features.device)
    votes.scatter_add_(1, labels[neighbours], torch.ones_like(neighbours, dtype=votes.dtype))
    return float((votes.argmax(dim=1) == labels).float().mean())


def _mean_pairwise(features: torch.Tensor) -> torch.Tensor:
    n = features.shape[0]
    if n < 2:
        return features.new_tensor(0.0)
    return torch.cdist(features, features).sum() / (n * (n - 1))


def intra_diversity(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean within-class pairwise distance over the mean pairwise distance of the whole set."""
    within = [_mean_pairwise(features[labels == k]) for k in range(num_classes) if (labels == k).sum() > 1]
    overall = _mean_pairwise(features)
    if not within or overall <= 0:
        return float("nan")
    return float(torch.stack(within).mean() / overall)


def _random_per_class(labels: np.ndarray, ipc: int, rng: np.random.Generator) -> np.ndarray:
    idx = [rng.choice(np.flatnonzero(labels == k), size=min(ipc, int((labels == k).sum())), replace=False)
           for k in np.unique(labels)]
    return np.concatenate(idx)


def _prototype_accuracy(emb: Embedded, net: int, index: np.ndarray | None) -> float:
    train, labels = emb.train[net], emb.train_labels
    if index is not None:
        sel = torch.as_tensor(index, device=train.device)
        train, labels = train[sel], labels[sel]
    means = _class_means(train, labels, emb.num_classes)
    present = torch.bincount(labels, minlength=emb.num_classes) > 0
    scores = emb.test[net] @ means.T
    scores[:, ~present] = -float("inf")
    return float((scores.argmax(dim=1) == emb.test_labels).float().mean())


def prototype_accuracy(emb: Embedded, net: int, ipc: int, rng: np.random.Generator, repeats: int = 5) -> float:
    """Nearest-class-mean test accuracy with class means from ``ipc`` random images per class."""
    labels = emb.train_labels.cpu().numpy()
    return float(np.mean([_prototype_accuracy(emb, net, _random_per_class(labels, ipc, rng)) for _ in range(repeats)]))


def prototype_ratio(emb: Embedded, net: int, ipc: int, rng: np.random.Generator) -> float:
    """:func:`prototype_accuracy` at ``ipc`` over the same with all train images."""
    full = _prototype_accuracy(emb, net, None)
    return prototype_accuracy(emb, net, ipc, rng) / full if full > 0 else float("nan")


def _kcenter_radius_one(features: torch.Tensor, ipc: int) -> float:
    """Greedy k-center radius of one class, over its mean pairwise distance."""
    n = features.shape[0]
    scale = _mean_pairwise(features)
    if n <= ipc or scale <= 0:
        return 0.0
    first = int((features - features.mean(dim=0)).norm(dim=1).argmin())
    nearest = (features - features[first]).norm(dim=1)
    for _ in range(ipc - 1):
        nxt = int(nearest.argmax())
        nearest = torch.minimum(nearest, (features - features[nxt]).norm(dim=1))
    return float(nearest.max() / scale)


def kcenter_radius(emb: Embedded, net: int, ipc: int, rng: np.random.Generator) -> float:
    """Mean over classes of the normalised greedy k-center coverage radius with ``ipc`` centres."""
    feats, labels = emb.train[net], emb.train_labels
    radii = [_kcenter_radius_one(feats[labels == k], ipc) for k in range(emb.num_classes) if (labels == k).any()]
    return float(np.mean(radii)) if radii else float("nan")


PROXIES: dict[str, Callable[[torch.Tensor, torch.Tensor, int], float]] = {
    "fisher_ratio": fisher_ratio,
    "knn_accuracy": knn_accuracy,
    "intra_diversity": intra_diversity,
}
IPC_PROXIES: dict[str, Callable[[Embedded, int, int, np.random.Generator], float]] = {
    "prototype_accuracy": lambda emb, net, ipc, rng: prototype_accuracy(emb, net, ipc, rng),
    "prototype_ratio": prototype_ratio,
    "kcenter_radius": kcenter_radius,
}


def _timed_mean(values: Callable[[], list[float]]) -> dict[str, float]:
    start = time.perf_counter()
    measured = values()
    return {"value": round(float(np.nanmean(measured)), 6), "seconds": round(time.perf_counter() - start, 4)}


def measure_proxies(emb: Embedded) -> dict[str, dict[str, float]]:
    """The IPC-independent proxies: ``{name: {"value", "seconds"}}``, averaged over the nets."""
    return {
        name: _timed_mean(lambda fn=fn: [fn(f, emb.train_labels, emb.num_classes) for f in emb.train])
        for name, fn in PROXIES.items()
    }


def measure_ipc_proxies(emb: Embedded, ipc: int, seed: int) -> dict[str, dict[str, float]]:
    """The IPC-dependent proxies at ``ipc``: ``{name: {"value", "seconds"}}``, averaged over the nets."""
    out = {}
    for name, fn in IPC_PROXIES.items():
        rng = np.random.default_rng([seed, ipc])  # the same subsets for every proxy: comparable values
        out[name] = _timed_mean(lambda fn=fn, rng=rng: [fn(emb, i, ipc, rng) for i in range(len(emb.train))])
    return out
