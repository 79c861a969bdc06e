"""Coreset baselines: pick ``ipc`` real images per class (random, herding, k-center).

Herding and k-center work in an embedding: the flattened features of a ConvNet
(``net.embed(x)``; ``net(x)`` for nets without ``embed``). The caller chooses the net:

* ``net=None`` builds a *random-init* ConvNet (seeded from ``generator``). Random ConvNet features
  already separate simple classes (distribution matching relies on the same fact) and cost nothing.
* :func:`embedding_net` builds a ConvNet and trains it briefly on the real train split
  (``epochs`` of the standard protocol). This makes herding and k-center more meaningful, because
  the distances then follow what separates the classes; it costs a short training run.

Methods (per class, classes in ascending label order):

* ``random``: a seeded random permutation, first ``ipc``.
* ``herding``: greedy herding (Welling 2009, as in the coreset baselines of the DC paper): add
  the image that brings the running mean of the chosen embeddings closest to the class mean.
* ``kcenter``: greedy k-center (farthest point), starting from the image closest to the class
  mean, then repeatedly the image farthest from everything chosen so far.

:func:`select_coreset` returns indices into ``images``: ``ipc`` per class, grouped by class in
ascending label order, each group in selection order.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from medcondense.distill.registry import CORESETS
from medcondense.errors import ConfigError

log = logging.getLogger(__name__)

#: the coreset names, from the method table (each has a selector in ``_SELECTORS``)
CORESET_METHODS = CORESETS


@torch.no_grad()
def embed_images(net: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Embeddings [N, D] of standardized ``images`` in eval mode (``net.embed`` when it has one)."""
    was_training = net.training
    net.eval()
    forward = getattr(net, "embed", net)
    try:
        parts = [forward(images[i : i + batch_size]).flatten(1).float() for i in range(0, images.shape[0], batch_size)]
    finally:
        net.train(was_training)
    return torch.cat(parts)


def _random(features: torch.Tensor | None, count: int, ipc: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(count, generator=generator, device=generator.device)[:ipc]


def _herding(features: torch.Tensor, count: int, ipc: int, generator: torch.Generator) -> torch.Tensor:
    target = features.mean(dim=0)
    chosen: list[int] = []
    running_sum = torch.zeros_like(target)
    available = torch.ones(count, dtype=torch.bool, device=features.device)
    for k in range(ipc):
        # Distance of the class mean to the mean of (chosen so far + each candidate).
        candidate_means = (running_sum.unsqueeze(0) + features) / (k + 1)
        distance = (candidate_means - target).norm(dim=1)
        distance = distance.masked_fill(~available, float("inf"))
        best = int(distance.argmin())
        chosen.append(best)
        available[best] = False
        running_sum += features[best]
    return torch.tensor(chosen, dtype=torch.long)


def _kcenter(features: torch.Tensor, count: int, ipc: int, generator: torch.Generator) -> torch.Tensor:
    first = int((features - features.mean(dim=0)).norm(dim=1).argmin())
    chosen = [first]
    nearest = (features - features[first]).norm(dim=1)
    for _ in range(ipc - 1):
        # Already chosen points have distance 0, so they are never picked again while others remain.
        best = int(nearest.argmax())
        chosen.append(best)
        nearest = torch.minimum(nearest, (features - features[best]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


_SELECTORS: dict[str, Callable[[torch.Tensor | None, int, int, torch.Generator], torch.Tensor]] = {
    "random": _random,
    "herding": _herding,
    "kcenter": _kcenter,
}


def _check_counts(labels: torch.Tensor, ipc: int, num_classes: int | None) -> list[int]:
    if ipc < 1:
        raise ConfigError(f"ipc must be at least 1, got {ipc}")
    present = sorted(int(c) for c in torch.unique(labels).tolist())
    classes = list(range(num_classes)) if num_classes is not None else present
    counts = {c: int((labels == c).sum()) for c in classes}
    short = {c: n for c, n in counts.items() if n < ipc}
    if short:
        listed = ", ".join(f"class {c}: {n}" for c, n in short.items())
        raise ConfigError(f"a coreset of {ipc} images per class needs at least {ipc} images in every class ({listed})")
    return classes


def default_embedding_net(images: torch.Tensor, num_classes: int, generator: torch.Generator) -> nn.Module:
    """A random-init ConvNet on the images' device, its weights seeded from ``generator``."""
    from medcondense.nets import build_net

    seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net("convnet", images.shape[1], num_classes, images.shape[-1])
    return net.to(images.device)


def embedding_net(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int,
    generator: torch.Generator,
) -> nn.Module:
    """A ConvNet trained for ``epochs`` on standardized real ``images`` (0 epochs: random init)."""
    from medcondense.train import TrainSettings, train_classifier

    net = default_embedding_net(images, num_classes, generator)
    if epochs > 0:
        train_classifier(net, images, labels, TrainSettings(epochs=epochs), generator=generator)
    return net


def select_coreset(
    method: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    ipc: int,
    *,
    net: nn.Module | None,
    generator: torch.Generator,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Indices of ``ipc`` images per class chosen by ``method``.

    Parameters
    ----------
    method : one of :data:`CORESET_METHODS`
    images : standardized images [N, C, H, W] (the real train split)
    labels : int labels [N]
    ipc : images per class to choose
    net : embedding network for herding/k-center; ``None`` builds a random-init ConvNet
        (ignored by ``random``)
    generator : source of randomness (random order, random-init weights)
    num_classes : when given, every class in ``range(num_classes)`` must have ``ipc`` images;
        otherwise the classes present in ``labels`` are used

    Returns
    -------
    torch.Tensor
        int64 indices into ``images`` (on ``labels``' device), grouped by class in ascending order.

    Raises
    ------
    ConfigError
        unknown method, ``ipc < 1``, or a class with fewer than ``ipc`` images.
    """
    if method not in _SELECTORS:
        raise ConfigError(f"unknown coreset method {method!r}; expected one of {', '.join(CORESET_METHODS)}")
    classes = _check_counts(labels, ipc, num_classes)
    features = None
    if method != "random":
        if net is None:
            log.info("coreset %s: embedding with a random-init ConvNet", method)
            net = default_embedding_net(images, max(classes) + 1, generator)
        features = embed_images(net, images)
    picked = []
    for c in classes:
        members = torch.nonzero(labels == c).flatten()
        class_features = None if features is None else features[members.to(features.device)]
        local = _SELECTORS[method](class_features, members.numel(), ipc, generator)
        picked.append(members[local.to(members.device)])
    return torch.cat(picked).to(labels.device)
