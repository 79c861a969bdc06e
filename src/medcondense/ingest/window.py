"""Intensity windows: DICOM presets, explicit centre/width, the file's own VOI, percentiles.

A window maps modality values (e.g. Hounsfield units) linearly onto [0, 1] and clips. ``auto``
resolves per series: the file's own VOI for CT when present, else the ``abdomen`` preset
(a soft-tissue window, the most generally useful CT default); percentiles for every other
modality and for NIfTI; the stored bit range for colour images. ``none`` keeps the modality
values untouched (meant for ``--normalize zscore`` or ``ct``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from medcondense.errors import ConfigError

PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "bone": (600.0, 2800.0),
    "lung": (-600.0, 1500.0),
    "abdomen": (40.0, 400.0),
    "mediastinum": (50.0, 350.0),
}
CT_FALLBACK = "abdomen"
KINDS = ("auto", "voi", "percentile", "none")
_CW = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class WindowSpec:
    """A parsed ``--window``: ``kind`` is auto, voi, percentile, none or fixed (with centre/width)."""

    kind: str
    center: float | None = None
    width: float | None = None
    name: str = ""


def parse_window(text: str) -> WindowSpec:
    """Parse ``--window`` (a preset name, ``C/W``, ``auto``, ``voi``, ``percentile`` or ``none``).

    Raises
    ------
    ConfigError
        Unknown preset or a width that is not positive.
    """
    key = (text or "auto").strip().lower()
    if key in PRESETS:
        c, w = PRESETS[key]
        return WindowSpec("fixed", c, w, key)
    if key in KINDS:
        return WindowSpec(key, name=key)
    match = _CW.match(key)
    if match:
        c, w = float(match.group(1)), float(match.group(2))
        if w <= 0:
            raise ConfigError(f"--window {text!r}: the width must be positive")
        return WindowSpec("fixed", c, w, f"{c:g}/{w:g}")
    raise ConfigError(
        f"unknown window preset {text!r}; expected one of {', '.join(list(PRESETS) + list(KINDS))} "
        "or centre/width such as 40/400"
    )


def resolve(spec: WindowSpec, *, modality: str, voi: tuple[float, float] | None,
            colour_bits: int | None = None) -> WindowSpec:
    """Turn ``auto`` / ``voi`` into a concrete window for one series.

    Parameters
    ----------
    spec : the parsed option
    modality : ``CT``, ``MR``, ... (``""`` when unknown)
    voi : the file's own (centre, width), first value if multi-valued, or None
    colour_bits : BitsStored of a colour image, whose window is then its full range
    """
    if spec.kind == "voi":
        if voi is not None and voi[1] > 0:
            return WindowSpec("fixed", voi[0], voi[1], "voi")
        return WindowSpec("percentile", name="percentile (no VOI in the file)")
    if spec.kind != "auto":
        return spec
    if colour_bits:
        top = float(2 ** colour_bits - 1)
        return WindowSpec("fixed", top / 2, top, "colour range")
    if modality.upper() == "CT":
        if voi is not None and voi[1] > 0:
            return WindowSpec("fixed", voi[0], voi[1], "voi")
        c, w = PRESETS[CT_FALLBACK]
        return WindowSpec("fixed", c, w, CT_FALLBACK)
    return WindowSpec("percentile", name="percentile")


def apply_window(values: np.ndarray, spec: WindowSpec, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Map ``values`` onto [0, 1] with a resolved window (``none`` returns them unchanged, as float32)."""
    values = np.asarray(values, dtype=np.float32)
    if spec.kind == "none":
        return values.copy()
    if spec.kind == "percentile":
        lo, hi = (float(v) for v in np.percentile(values, percentiles))
    elif spec.kind == "fixed":
        lo = float(spec.center) - float(spec.width) / 2.0
        hi = float(spec.center) + float(spec.width) / 2.0
    else:
        raise ValueError(f"unresolved window {spec.kind!r}")
    if hi <= lo:
        return np.zeros_like(values)
    out = values - lo  # float32 (numpy treats the Python floats as weak); then in place, one buffer
    out /= hi - lo
    return np.clip(out, 0.0, 1.0, out=out)


def invert(values: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """MONOCHROME1 display: high values dark. ``1 - x`` for windowed values, mirrored range for ``none``."""
    if spec.kind == "none":
        return (float(values.min()) + float(values.max()) - values).astype(np.float32)
    return (1.0 - values).astype(np.float32)


def first_value(value: object) -> float | None:
    """The first of a possibly multi-valued DICOM number (``WindowCenter`` may hold several)."""
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or hasattr(value, "__getitem__") and not isinstance(value, str):
            value = value[0]  # type: ignore[index]
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None
