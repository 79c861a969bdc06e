"""Random-ConvNet embeddings: the cheap feature space that the proxies, MMD and privacy audit share.

A freshly initialised ConvNet (the reference architecture, never trained) is a surprisingly good
feature extractor for small images; DM distils in exactly this space. Every measurement here is
averaged over a few such nets so one unlucky initialisation does not decide a score. The nets are
built on the CPU from a fixed seed and then moved, so the same seed gives the same weights on any
device.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medcondense.nets import build_net


def random_nets(
    channels: int, image_size: int, num_nets: int, seed: int, device: torch.device
) -> list[nn.Module]:
    """``num_nets`` untrained ConvNets, seeded ``seed, seed+1, ...``, in eval mode on ``device``.

    The global torch RNG is left as it was (the init runs inside ``fork_rng``).
    """
    nets = []
    for i in range(num_nets):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7919 * i)
            net = build_net("convnet", channels, 2, image_size)
        nets.append(net.to(device).eval())
    return nets


# Feature maps larger than this are average-pooled down to it: a 64 px image would otherwise give
# 8192 features a net, and the privacy audit keeps every real train image's embedding in memory.
MAX_GRID = 4


@torch.no_grad()
def embed(net: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """ConvNet features of standardized ``images`` as [N, D] float32 on their device.

    The last feature map is pooled to at most ``MAX_GRID`` x ``MAX_GRID`` before flattening.
    """
    parts = []
    for i in range(0, images.shape[0], batch_size):
        fmap = net.features(images[i : i + batch_size])
        if fmap.shape[-1] > MAX_GRID:
            fmap = nn.functional.adaptive_avg_pool2d(fmap, MAX_GRID)
        parts.append(fmap.flatten(1).float())
    return torch.cat(parts) if parts else images.new_zeros((0, 1))


def unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cap_per_class(labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``cap`` randomly chosen items per class (all of a smaller class), sorted.

    Bounds the cost of the O(N^2) measurements on large sets; the choice is seeded.
    """
    chosen = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        if idx.size > cap:
            idx = rng.choice(idx, size=cap, replace=False)
        chosen.append(idx)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
