"""Train-from-scratch and predict: the loop ``evaluate``, ``score`` and ``distill`` share.

The protocol is the reference's ``evaluate_synset``: SGD (momentum 0.9, weight decay 5e-4),
cross-entropy, batch 256, learning rate x0.1 at half the epochs. Inputs are standardized with
the train-split statistics recorded in the data file (see :func:`standardize`), because the
reference's learning rates assume z-scored inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from medcondense.errors import RuntimeFailure

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class TrainSettings:
    """Hyper-parameters of one training run (reference defaults)."""

    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256


def standardize(images: np.ndarray | torch.Tensor, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """``(images - mean) / std`` per channel, as a float32 tensor (on the images' device)."""
    x = torch.as_tensor(images, dtype=torch.float32)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def destandardize(x: torch.Tensor, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`standardize`."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


def train_classifier(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    *,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Train ``net`` in place on standardized ``images`` (already on the net's device); return it.

    ``augment(batch, generator)`` is applied to every batch when given (e.g. DSA augmentation).
    Raises :class:`RuntimeFailure` if the loss becomes NaN/Inf.
    """
    device = images.device
    n = images.shape[0]
    if n == 0:
        raise RuntimeFailure("cannot train on an empty set")
    gen = generator or torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [max(1, settings.epochs // 2)], gamma=0.1)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for epoch in range(settings.epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            x, y = images[idx], labels[idx]
            if augment is not None:
                x = augment(x, gen)
            loss = loss_fn(net(x), y)
            if not torch.isfinite(loss):
                raise RuntimeFailure(f"training loss became {loss.item()} at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return net


@torch.no_grad()
def predict_proba(net: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Softmax class probabilities [N, K] as a NumPy array."""
    net.eval()
    out = [torch.softmax(net(images[i : i + batch_size]).float(), dim=1).cpu() for i in range(0, images.shape[0], batch_size)]
    net.train()
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
