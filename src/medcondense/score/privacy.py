"""Privacy audit: is any synthetic image a near-copy of a real training image?

For each synthetic image we find its most similar real *training* image (the images the set was
distilled from) in two ways:

* embedding cosine in random-ConvNet space (features centred on the real train mean first:
  raw ReLU features are all positive, so uncentred cosines are high for any pair), averaged over
  the random nets, compared against *all* real train images;
* SSIM (``skimage.metrics.structural_similarity``, ``data_range`` = the real images' range),
  computed only for the ``topk`` most cosine-similar real images (default 8): all N_syn x N_real
  pairs would be too slow on large sets, and a pixel-level near-copy is also close in embedding.

An image is a near-copy when SSIM >= ``ssim_threshold`` (0.95) or cosine >= ``cosine_threshold``
(0.98). Thresholds mean little on their own, so the same similarities are measured real-vs-real
(each of up to ``baseline_samples`` real train images against the other real train images) and
their 99th percentile is reported with every run: neighbouring slices of one patient can be as
alike as that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medcondense.atomic import atomic_path

log = logging.getLogger(__name__)

QUANTILES = {"p50": 50, "p90": 90, "p99": 99, "max": 100}


@dataclass
class AuditSettings:
    """Thresholds and costs of the audit (defaults documented in docs/score.md)."""

    ssim_threshold: float = 0.95
    cosine_threshold: float = 0.98
    topk: int = 8
    baseline_samples: int = 200


def centred_cosine(query: list[torch.Tensor], reference: list[torch.Tensor], centres: list[torch.Tensor]) -> torch.Tensor:
    """[Nq, Nr] cosine similarity of centred features, averaged over the random nets."""
    total = None
    for q, r, c in zip(query, reference, centres):
        qn = torch.nn.functional.normalize(q - c, dim=1)
        rn = torch.nn.functional.normalize(r - c, dim=1)
        sim = qn @ rn.T
        total = sim if total is None else total + sim
    return total / len(query)


def _ssim_fn(image_shape: tuple[int, ...], data_range: float):
    """An SSIM(a, b) for [C, H, W] arrays, with a window that fits small images."""
    from skimage.metrics import structural_similarity

    side = min(image_shape[1:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"images of {side} px are too small for SSIM")
    multichannel = image_shape[0] > 1

    def ssim(a: np.ndarray, b: np.ndarray) -> float:
        if multichannel:
            return float(structural_similarity(a, b, data_range=data_range, win_size=win, channel_axis=0))
        return float(structural_similarity(a[0], b[0], data_range=data_range, win_size=win))

    return ssim


def nearest_real(
    query_images: np.ndarray, cosine: torch.Tensor, real_images: np.ndarray, topk: int, data_range: float,
    exclude: np.ndarray | None = None,
) -> list[dict]:
    """For each query row: SSIM-best among the top-k cosine matches, and the top cosine.

    ``exclude[i]`` (optional) is a real index query ``i`` must not match (itself, for real-vs-real).
    """
    if exclude is not None:
        cosine = cosine.clone()
        cosine[torch.arange(cosine.shape[0]), torch.as_tensor(exclude, device=cosine.device)] = -float("inf")
    k = min(topk, cosine.shape[1])
    top_cos, top_idx = (t.cpu().numpy() for t in cosine.topk(k, dim=1))
    ssim = _ssim_fn(real_images.shape[1:], data_range)
    out = []
    for i in range(query_images.shape[0]):
        ssims = np.array([ssim(query_images[i], real_images[j]) for j in top_idx[i]])
        best = int(ssims.argmax())
        out.append({
            "ssim": float(ssims[best]), "ssim_real": int(top_idx[i, best]), "cosine_of_ssim_match": float(top_cos[i, best]),
            "cosine": float(top_cos[i, 0]), "cosine_real": int(top_idx[i, 0]),
        })
    return out


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {name: round(float(np.percentile(values, q)), 4) for name, q in QUANTILES.items()}


def real_baseline(
    real_images: np.ndarray, real_emb: list[torch.Tensor], centres: list[torch.Tensor],
    settings: AuditSettings, data_range: float, seed: int,
) -> dict:
    """Nearest-other-real similarities for a sample of real train images: the 'normal' level."""
    n = real_images.shape[0]
    if n < 2:
        return {"n": 0, "ssim": {}, "cosine": {}}
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(settings.baseline_samples, n), replace=False))
    sel = torch.as_tensor(sample, device=real_emb[0].device)
    cos = centred_cosine([e[sel] for e in real_emb], real_emb, centres)
    matches = nearest_real(real_images[sample], cos, real_images, settings.topk, data_range, exclude=sample)
    return {
        "n": int(sample.size),
        "ssim": _quantiles([m["ssim"] for m in matches]),
        "cosine": _quantiles([m["cosine"] for m in matches]),
    }


def audit(
    syn_images: np.ndarray, syn_labels: np.ndarray, syn_emb: list[torch.Tensor],
    real_images: np.ndarray, real_index: np.ndarray, real_emb: list[torch.Tensor],
    class_names: list[str], settings: AuditSettings, seed: int,
) -> dict:
    """Audit ``syn_images`` against the real train images.

    ``real_index`` maps rows of ``real_images``/``real_emb`` to indices in the real file, so that
    a flagged pair can be found again. Returns per-image matches, distributions and flags.
    """
    centres = [e.mean(dim=0, keepdim=True) for e in real_emb]
    data_range = float(real_images.max() - real_images.min()) or 1.0
    cos = centred_cosine(syn_emb, real_emb, centres)
    matches = nearest_real(syn_images, cos, real_images, settings.topk, data_range)
    images = []
    for i, m in enumerate(matches):
        by_ssim = m["ssim"] >= settings.ssim_threshold
        by_cos = m["cosine"] >= settings.cosine_threshold
        # The reported partner is the pair that triggered the flag (SSIM first: it is pixel-level).
        row = m["ssim_real"] if by_ssim or not by_cos else m["cosine_real"]
        images.append({
            "index": i,
            "label": class_names[int(syn_labels[i])],
            "real_index": int(real_index[row]),
            "ssim": round(m["ssim"], 4),
            "cosine": round(m["cosine"], 4),
            "near_copy": bool(by_ssim or by_cos),
            "_row": row,
        })
    baseline = real_baseline(real_images, real_emb, centres, settings, data_range, seed)
    return {
        "thresholds": {"ssim": settings.ssim_threshold, "cosine": settings.cosine_threshold},
        "ssim_candidates": settings.topk,
        "syn_vs_real": {"ssim": _quantiles([m["ssim"] for m in matches]),
                        "cosine": _quantiles([m["cosine"] for m in matches])},
        "real_vs_real": baseline,
        "near_copies": sum(img["near_copy"] for img in images),
        "images": images,
    }


def save_pairs(report: dict, syn_images: np.ndarray, real_images: np.ndarray, folder: str | Path) -> list[str]:
    """Write each flagged (synthetic, real) pair side by side as a PNG; return the paths.

    Uses matplotlib's object-oriented Agg canvas (no pyplot, no global backend switch). Each file
    is written to a private temporary and renamed, so a crash leaves no half-written PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lo, hi = float(real_images.min()), float(real_images.max())
    written = []
    for img in report["images"]:
        if not img["near_copy"]:
            continue
        fig = Figure(figsize=(6, 3.3))
        FigureCanvasAgg(fig)
        for ax, (title, arr) in zip(fig.subplots(1, 2), (
            (f"synthetic #{img['index']} ({img['label']})", syn_images[img["index"]]),
            (f"real #{img['real_index']}", real_images[img["_row"]]),
        )):
            ax.imshow(_displayable(arr, lo, hi), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle(f"SSIM {img['ssim']:.3f}   cosine {img['cosine']:.3f}", fontsize=10)
        path = folder / f"near_copy_syn{img['index']:04d}_real{img['real_index']}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        written.append(str(path))
    return written


def _displayable(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """[C, H, W] -> [H, W] (grey) or [H, W, 3] scaled to [0, 1] with the real data's range."""
    scaled = np.clip((image - lo) / ((hi - lo) or 1.0), 0, 1)
    return scaled[0] if scaled.shape[0] != 3 else np.transpose(scaled, (1, 2, 0))


def strip_internal(report: dict) -> dict:
    """The report without the private row indices used to draw pairs."""
    return {**report, "images": [{k: v for k, v in img.items() if not k.startswith("_")} for img in report["images"]]}
