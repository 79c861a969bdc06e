"""Normalization of the stored images, with statistics of the train split only.

* ``window``: values stay as windowed ([0, 1]).
* ``zscore``: per channel, ``(x - mean) / std`` with the train split's mean and std.
* ``ct``: nnU-Net style: clip to the 0.5/99.5 percentiles of the train split's foreground
  (pixels above each image's minimum, i.e. not background or padding), then z-score with the
  mean/std of the clipped foreground.

Whatever the method, ``train_mean``/``train_std`` record the per-channel statistics of the
stored train images: later stages standardize with them.
"""

from __future__ import annotations

import numpy as np

from medcondense.errors import ConfigError

METHODS = ("window", "zscore", "ct")


def check_method(method: str) -> str:
    """Validate ``--normalize``."""
    if method not in METHODS:
        raise ConfigError(f"unknown --normalize {method!r}; expected one of {', '.join(METHODS)}")
    return method


def foreground(images: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels above their image's minimum (per image and channel)."""
    mins = images.min(axis=(2, 3), keepdims=True)
    return images > mins


def channel_stats(images: np.ndarray, rows: np.ndarray | None = None, chunk: int = 1024) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``[N, C, H, W]`` images (or of the ``rows`` chosen by a boolean
    mask), in two float64 passes over chunks, so memory stays at one chunk, not a copy of the set."""
    c = images.shape[1] if images.ndim == 4 else 1
    index = np.arange(images.shape[0]) if rows is None else np.flatnonzero(rows)
    if index.size == 0:
        return [0.0] * c, [1.0] * c
    chunks = [index[i : i + chunk] for i in range(0, index.size, chunk)]
    count = index.size * images.shape[2] * images.shape[3]
    total = sum(_rows(images, i).sum(axis=(0, 2, 3), dtype=np.float64) for i in chunks)
    mean = total / count
    squares = sum(_squared_deviations(_rows(images, i), mean).sum(axis=(0, 2, 3)) for i in chunks)
    std = np.sqrt(squares / count)
    return [float(v) for v in mean], [float(v) for v in std]


def _rows(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``images[index]``; a view, not a copy, when ``index`` is a run of consecutive rows (the same
    values in the same layout, so the sums above do not change by a bit)."""
    if index.size and int(index[-1]) - int(index[0]) + 1 == index.size:
        return images[int(index[0]) : int(index[-1]) + 1]
    return images[index]


def _squared_deviations(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``np.square(rows - mean)`` in float64, computed in one buffer instead of three."""
    out = rows.astype(np.float64)
    out -= mean[None, :, None, None]
    return np.square(out, out=out)


def fit(images: np.ndarray, train: np.ndarray, method: str,
        percentiles: tuple[float, float] = (0.5, 99.5)) -> dict:
    """Parameters of ``method`` from the train images (``train`` is a boolean mask over N)."""
    check_method(method)
    if method == "window":
        return {}
    rows = train if train.any() else None
    if method == "zscore":
        mean, std = channel_stats(images, rows)
        return {"mean": mean, "std": [s if s > 1e-8 else 1.0 for s in std]}
    part = images[train] if train.any() else images
    c = images.shape[1]
    lo, hi, mean, std = [], [], [], []
    for ch in range(c):
        values = part[:, ch][foreground(part[:, ch : ch + 1])[:, 0]]
        if values.size == 0:
            values = part[:, ch].ravel()
        p_lo, p_hi = (float(v) for v in np.percentile(values, percentiles))
        clipped = np.clip(values, p_lo, p_hi)
        lo.append(p_lo)
        hi.append(p_hi)
        mean.append(float(clipped.mean(dtype=np.float64)))
        s = float(clipped.std(dtype=np.float64))
        std.append(s if s > 1e-8 else 1.0)
    return {"clip_low": lo, "clip_high": hi, "mean": mean, "std": std}


def apply(images: np.ndarray, method: str, params: dict) -> np.ndarray:
    """Apply fitted parameters to ``[N, C, H, W]`` images (in place where possible)."""
    if method == "window" or images.shape[0] == 0:
        return images
    mean = np.asarray(params["mean"], dtype=np.float32)[None, :, None, None]
    std = np.asarray(params["std"], dtype=np.float32)[None, :, None, None]
    if method == "ct":
        lo = np.asarray(params["clip_low"], dtype=np.float32)[None, :, None, None]
        hi = np.asarray(params["clip_high"], dtype=np.float32)[None, :, None, None]
        np.clip(images, lo, hi, out=images)
    images -= mean
    images /= std
    return images


def normalization_attr(images: np.ndarray, train: np.ndarray, method: str, params: dict) -> dict:
    """The ``normalization`` root attribute: method, params, per-channel train mean/std of the stored images."""
    mean, std = channel_stats(images, train)
    return {"method": method, "params": params, "train_mean": mean, "train_std": std}
