"""How close a distilled set lies to the real data: MMD and coverage in random-ConvNet space.

Both are measured per class (a distilled set is matched class by class) and averaged over the
classes and the random nets; each comes with the value a *random real subset of the same size*
gets, which is what "good" means for a set this small.

``mmd``       squared maximum mean discrepancy (biased estimate, Gaussian kernel with the
              median real-real distance as bandwidth); 0 = same distribution.
``coverage``  Naeem et al. 2020: the fraction of real images whose 5-NN ball (among real images
              of their class) holds at least one synthetic image of that class; 1 = all covered.
"""

from __future__ import annotations

import numpy as np
import torch

COVERAGE_K = 5


def _median_distance(features: torch.Tensor) -> torch.Tensor:
    dist = torch.cdist(features, features)
    off = dist[~torch.eye(features.shape[0], dtype=torch.bool, device=features.device)]
    return off.median().clamp_min(1e-6) if off.numel() else features.new_tensor(1.0)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: torch.Tensor) -> float:
    """Biased squared MMD between the rows of ``x`` and ``y`` with a Gaussian kernel."""
    gamma = 1.0 / (2 * bandwidth**2)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * torch.cdist(a, b) ** 2).mean()

    return float(k(x, x) + k(y, y) - 2 * k(x, y))


def coverage(real: torch.Tensor, fake: torch.Tensor, k: int = COVERAGE_K) -> float:
    """Fraction of ``real`` rows whose k-NN radius (within ``real``) contains a ``fake`` row."""
    n = real.shape[0]
    if n < 2 or fake.shape[0] == 0:
        return 0.0
    dist = torch.cdist(real, real)
    radius = dist.topk(min(k + 1, n), largest=False).values[:, -1]  # +1: the point itself is at 0
    nearest_fake = torch.cdist(real, fake).min(dim=1).values
    return float((nearest_fake <= radius).float().mean())


def _per_class(
    real: torch.Tensor, real_y: torch.Tensor, other: torch.Tensor, other_y: torch.Tensor, classes: list[int]
) -> tuple[list[float], list[float]]:
    mmds, covs = [], []
    for c in classes:
        r, o = real[real_y == c], other[other_y == c]
        if r.shape[0] == 0 or o.shape[0] == 0:
            mmds.append(float("nan"))
            covs.append(0.0)
            continue
        mmds.append(mmd2(r, o, _median_distance(r)))
        covs.append(coverage(r, o))
    return mmds, covs


def compare_sets(
    real: list[torch.Tensor], real_labels: torch.Tensor, syn: list[torch.Tensor], syn_labels: torch.Tensor,
    class_names: list[str], seed: int,
) -> dict:
    """MMD and coverage of ``syn`` vs the real train embeddings, with the random-subset baseline.

    ``real`` and ``syn`` hold one [N, D] embedding per random net (unit rows).
    """
    classes = list(range(len(class_names)))
    counts = torch.bincount(syn_labels, minlength=len(classes)).cpu().numpy()
    rng = np.random.default_rng(seed)
    labels_np = real_labels.cpu().numpy()
    baseline_idx = np.concatenate([
        rng.choice(np.flatnonzero(labels_np == c), size=min(int(counts[c]), int((labels_np == c).sum())), replace=False)
        for c in classes
    ]).astype(np.int64)
    base_sel = torch.as_tensor(baseline_idx, device=real_labels.device)
    syn_mmd, syn_cov, base_mmd, base_cov = [], [], [], []
    for r, s in zip(real, syn):
        m, c = _per_class(r, real_labels, s, syn_labels, classes)
        syn_mmd.append(m)
        syn_cov.append(c)
        m, c = _per_class(r, real_labels, r[base_sel], real_labels[base_sel], classes)
        base_mmd.append(m)
        base_cov.append(c)
    per_class_cov = np.mean(syn_cov, axis=0)
    return {
        "mmd": round(float(np.nanmean(syn_mmd)), 6),
        "mmd_random_subset": round(float(np.nanmean(base_mmd)), 6),
        "coverage": round(float(np.mean(syn_cov)), 6),
        "coverage_random_subset": round(float(np.mean(base_cov)), 6),
        "coverage_per_class": {class_names[c]: round(float(per_class_cov[c]), 4) for c in classes},
        "classes_present": int((counts > 0).sum()),
        "classes_total": len(classes),
    }
