"""Inputs checked against each other: a set to judge or score against the real set it meets.

evaluate and score read two files: the real set (the yardstick) and a synthetic, subset or other
set. They only make sense together when both hold the same classes in the same order, images of
the same shape, and values in the same intensity space (the same normalization, with train
statistics that agree). A mismatch is exit 2 naming both files and both sides;
``--allow-mismatch`` turns it into a warning. A different source (``source_hash`` is not the real
set's ``content_hash``) is legitimate for cross-site and merged sets, so it is a warning, except
where the caller says it is an error (score's privacy audit, which must compare the images with
the very set they were made from).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from medcondense.errors import DataMismatchError

log = logging.getLogger(__name__)

#: train statistics of two sets in one intensity space agree within this (relative) tolerance
STAT_TOLERANCE = 0.10
ALLOW_HINT = "pass --allow-mismatch to use them together anyway"


def _numbers(value: Any) -> list[float] | None:
    """The numbers in a JSON-like value, flattened in a stable order (None when there are none)."""
    out: list[float] = []

    def walk(v: Any) -> None:
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            out.append(float(v))
        elif isinstance(v, dict):
            for key in sorted(v):
                walk(v[key])
        elif isinstance(v, (list, tuple)):
            for item in v:
                walk(item)

    walk(value)
    return out or None


def _close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=STAT_TOLERANCE, abs_tol=0.05) for x, y in zip(a, b)
    )


def intensity_difference(real_attrs: dict[str, Any], other_attrs: dict[str, Any]) -> tuple[str, str] | None:
    """How the two sets' intensity spaces differ (the other's side, the real side), or None when
    they agree (or one of them does not say)."""
    real_norm, other_norm = real_attrs.get("normalization"), other_attrs.get("normalization")
    if not isinstance(real_norm, dict) or not isinstance(other_norm, dict):
        return None  # a set without the attribute (foreign or older): nothing to compare
    real_method, other_method = real_norm.get("method"), other_norm.get("method")
    if real_method != other_method:
        return f"normalization {other_method!r}", f"{real_method!r}"
    if real_method == "window":
        return None  # both in the [0, 1] window: the same space whatever the statistics
    for key in ("params", "train_mean", "train_std"):
        a, b = _numbers(real_norm.get(key)), _numbers(other_norm.get(key))
        if a is not None and b is not None and not _close(a, b):
            return f"{real_method} {key} {[round(x, 4) for x in b]}", f"{[round(x, 4) for x in a]}"
    return None


def check_against_real(
    other: Any, other_path: str | Path, real: Any, real_path: str | Path, *,
    allow_mismatch: bool = False, source_must_match: bool = False,
) -> list[str]:
    """Raise DataMismatchError (exit 2) unless ``other`` fits ``real``; return the warnings.

    Both are :class:`medcondense.store.ImageSet`. Checked: image shape (C, H, W) and the number
    of classes (never overridable), class names and their order, the intensity space
    (normalization and its statistics) and, as a warning unless ``source_must_match``, whether
    ``other`` was made from ``real`` (these four give way to ``allow_mismatch``).
    """
    other_name, real_name = Path(other_path).name, Path(real_path).name
    problems: list[str] = []
    hard: list[str] = []  # no flag makes these usable together
    if tuple(other.image_shape) != tuple(real.image_shape):
        hard.append(f"image shape (C, H, W) {tuple(other.image_shape)} in {other_name} vs {tuple(real.image_shape)} in {real_name}")
    if list(other.class_names) != list(real.class_names):
        text = f"class names {list(other.class_names)} in {other_name} vs {list(real.class_names)} in {real_name}"
        (hard if len(other.class_names) != len(real.class_names) else problems).append(text)
    if hard:
        raise DataMismatchError("; ".join(hard), path=other_path)
    intensity = intensity_difference(real.attrs, other.attrs)
    if intensity:
        problems.append(f"intensity space: {intensity[0]} in {other_name} vs {intensity[1]} in {real_name}")
    warnings: list[str] = []
    source = other.attrs.get("source_hash")
    real_hash = real.attrs.get("content_hash")
    if source and real_hash and source != real_hash:
        text = f"{other_name} was made from another set than {real_name} (source_hash {str(source)[:12]} vs content_hash {str(real_hash)[:12]})"
        if source_must_match:
            problems.append(text)
        else:
            warnings.append(text + "; fine for cross-site or merged sets")
    if problems and not allow_mismatch:
        raise DataMismatchError("; ".join(problems), path=other_path, hint=ALLOW_HINT)
    warnings = [f"--allow-mismatch: {p}" for p in problems] + warnings
    for text in warnings:
        log.warning("%s", text)
    return warnings
