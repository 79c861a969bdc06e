"""Undo ingest's intensity mapping: stored values -> modality values (e.g. Hounsfield units).

Ingest maps modality values ``v`` onto stored values ``x`` in two steps (docs/format.md):

1. a window ``(centre c, width w)``: ``y = clip((v - (c - w/2)) / w, 0, 1)``, or ``none`` (``y = v``),
   or a percentile window chosen per series (not recorded as one pair, so not invertible);
2. a normalization: ``window`` (``x = y``), ``zscore`` or ``ct`` (``x = (y - mean) / std``, ``ct``
   after clipping ``y`` to percentiles).

:func:`intensity_map` reads what the file recorded and returns an :class:`IntensityMap` whose
:meth:`~IntensityMap.to_modality` inverts both steps as far as they are known. Clipping cannot be
undone: a value at the edge of the window comes back as the edge. When the window is unknown
(percentile, per-series ``auto``, or nothing recorded) the values come back in window space
(fractions of the display range, 0..1) and :attr:`IntensityMap.known` is False; exporters say so.

The attributes read (tolerantly, the first one present wins) are listed in docs/export.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

NORMALIZATIONS_WITH_STATS = ("zscore", "ct", "z-score", "nnunet")


@dataclass(frozen=True)
class IntensityMap:
    """How to turn a set's stored values back into modality values.

    Parameters
    ----------
    window : (centre, width) of the recorded window, or None when unknown or ``none``
    window_applied : whether ingest mapped values through a window at all (False for ``none``)
    mean, std : per-channel statistics of a z-score normalization, or None (``window`` normalization)
    description : one line for logs, DICOM comments and the data card
    """

    window: tuple[float, float] | None
    window_applied: bool
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    description: str = ""

    @property
    def known(self) -> bool:
        """True when :meth:`to_modality` yields modality values (the window, if any, is known)."""
        return self.window is not None or not self.window_applied

    def to_window_space(self, images: np.ndarray) -> np.ndarray:
        """Undo the normalization only: [N, C, H, W] stored values -> values after the window step."""
        out = np.asarray(images, dtype=np.float64)
        if self.mean is not None and self.std is not None:
            shape = (1, -1, 1, 1) if out.ndim == 4 else (-1, 1, 1)
            mean = np.asarray(self.mean, dtype=np.float64).reshape(shape)
            std = np.asarray(self.std, dtype=np.float64).reshape(shape)
            out = out * std + mean
        return out

    def to_modality(self, images: np.ndarray) -> np.ndarray:
        """[N, C, H, W] (or [C, H, W]) stored values -> modality values (window space if unknown), float64."""
        y = self.to_window_space(images)
        if self.window is None:
            return y
        centre, width = self.window
        return (centre - width / 2.0) + y * width

    def to_display(self, images: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """Stored values -> [0, 1] for PNG/npz: the window when ingest used one, else a robust range.

        ``reference`` (default: ``images``) sets the 0.5/99.5 percentile range used when there is no
        window (``none`` window, or z-scored values of an unknown window), so that all images of a
        set share one grey scale.
        """
        y = self.to_window_space(images)
        if self.window_applied:
            return np.clip(y, 0.0, 1.0)
        ref = y if reference is None else self.to_window_space(reference)
        lo, hi = (float(v) for v in np.percentile(ref, (0.5, 99.5)))
        if hi <= lo:
            return np.zeros_like(y)
        return np.clip((y - lo) / (hi - lo), 0.0, 1.0)


def intensity_map(attrs: dict[str, Any], channels: int) -> IntensityMap:
    """Build the inverse mapping from a set's root attributes (``preprocessing``, ``normalization``).

    Parameters
    ----------
    attrs : the decoded root attributes of a medcondense file
    channels : number of image channels (per-channel statistics are broadcast to it)
    """
    pre = attrs.get("preprocessing") if isinstance(attrs.get("preprocessing"), dict) else {}
    norm = attrs.get("normalization") if isinstance(attrs.get("normalization"), dict) else {}
    window, applied, window_text = _recorded_window(pre)
    method = str(norm.get("method") or pre.get("normalization") or pre.get("normalize") or "window").lower()
    mean = std = None
    if method in NORMALIZATIONS_WITH_STATS:
        mean, std = _zscore_params(norm, pre, channels)
        if mean is None:
            # per-image z-scores, or statistics not recorded: only the window fraction is recoverable
            log.warning("normalization %r without recorded mean/std: values are exported as stored", method)
            window, applied = None, True
            window_text += f"; {method} normalization without recorded statistics"
    parts = [window_text, f"normalization {method}" + (" (inverted)" if mean is not None else "")]
    return IntensityMap(window=window, window_applied=applied, mean=mean, std=std, description="; ".join(parts))


def _recorded_window(pre: dict[str, Any]) -> tuple[tuple[float, float] | None, bool, str]:
    """(window or None, whether a window was applied, description) from the preprocessing record."""
    raw = pre.get("window")
    if raw is None and "window_center" in pre and "window_width" in pre:
        raw = {"center": pre["window_center"], "width": pre["window_width"]}
    if isinstance(raw, list):
        # one window per series: invertible only when they all agree
        distinct = {_window_pair(r) for r in raw}
        raw = raw[0] if len(distinct) == 1 and None not in distinct else "per-series"
    if raw is None:
        return None, True, "window not recorded (values exported in window space, 0..1)"
    if isinstance(raw, str) and raw.strip().lower().startswith("none"):  # ingest writes "none (for --normalize ct)"
        return None, False, "no window (modality values)"
    pair = _window_pair(raw)
    if pair is None:
        return None, True, f"window {_describe(raw)} not invertible (values exported in window space, 0..1)"
    return pair, True, f"window centre {pair[0]:g} width {pair[1]:g}"


def _window_pair(raw: Any) -> tuple[float, float] | None:
    """(centre, width) from a dict (``center``/``centre``/``width``), a ``C/W`` text or a preset name."""
    if isinstance(raw, dict):
        kind = str(raw.get("kind", "fixed")).lower()
        if kind == "none":
            return None
        centre = raw.get("center", raw.get("centre"))
        width = raw.get("width")
        try:
            pair = (float(centre), float(width))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return pair if pair[1] > 0 else None
    if isinstance(raw, str):
        from medcondense.errors import ConfigError
        from medcondense.ingest.window import parse_window

        try:
            spec = parse_window(raw)
        except ConfigError:
            return None
        if spec.kind == "fixed" and spec.center is not None and spec.width:
            return float(spec.center), float(spec.width)
    return None


def _describe(raw: Any) -> str:
    if isinstance(raw, dict):
        return str(raw.get("name") or raw.get("kind") or raw)
    return repr(raw)


def _zscore_params(norm: dict[str, Any], pre: dict[str, Any], channels: int) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Per-channel (mean, std) of a z-score normalization from ``normalization.params`` (or preprocessing)."""
    for source in (norm.get("params"), norm, pre.get("normalization_params"), pre.get("normalization_stats")):
        if not isinstance(source, dict):
            continue
        mean, std = source.get("mean"), source.get("std")
        if mean is None or std is None:
            continue
        try:
            m = np.broadcast_to(np.asarray(mean, dtype=np.float64).ravel(), (channels,))
            s = np.broadcast_to(np.asarray(std, dtype=np.float64).ravel(), (channels,))
        except ValueError:
            continue
        return tuple(float(v) for v in m), tuple(float(v) for v in s)
    return None, None
