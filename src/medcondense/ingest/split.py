"""Patient-level train/val/test split, seeded and stratified by each patient's majority label.

No patient is in two splits. Splits given in the CSV win (for every image of that patient).
Patients are dealt, class by class in a seeded random order, to the split that is furthest
behind its target fraction (within the class first, then overall), which keeps the class mix
of each split close to the whole even with few patients.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from medcondense.errors import ConfigError


#: how far from 1 the three fractions may sum (rounding, e.g. 0.33,0.33,0.33)
SUM_TOLERANCE = 0.011


def check_fractions(fractions: tuple[float, ...] | list[float]) -> tuple[float, float, float]:
    """Validate ``--split``: three finite numbers >= 0, train > 0, summing to 1 within rounding
    (then scaled to exactly 1)."""
    try:
        values = [float(v) for v in fractions]
    except (TypeError, ValueError):
        raise ConfigError(f"--split expects three numbers such as 0.7,0.15,0.15, got {fractions!r}") from None
    shown = ",".join(str(v) for v in fractions) if isinstance(fractions, (list, tuple)) else repr(fractions)
    if len(values) != 3:
        raise ConfigError(f"--split expects three fractions train,val,test such as 0.7,0.15,0.15, got {shown}")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--split fractions must be finite numbers, got {shown}")
    if any(v < 0 for v in values) or values[0] <= 0:
        raise ConfigError(f"--split fractions must be >= 0 with a positive train part, got {shown}")
    total = sum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ConfigError(f"--split fractions must sum to 1, got {shown} (sum {total:g})")
    return tuple(v / total for v in values)  # type: ignore[return-value]


def assign(
    patients: list[str],
    labels: list[int],
    fixed: list[int | None],
    fractions: tuple[float, float, float],
    seed: int = 0,
) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) per image, such that each patient has one split.

    Parameters
    ----------
    patients : patient key of each image
    labels : class index of each image
    fixed : split given by the CSV for each image, or None
    fractions : target fractions by patient
    seed : seeds the order in which patients are dealt

    Raises
    ------
    ConfigError
        The CSV puts one patient's images into two splits.
    """
    fixed_by_patient: dict[str, int] = {}
    votes: dict[str, Counter] = defaultdict(Counter)
    for patient, label, given in zip(patients, labels, fixed):
        votes[patient][label] += 1
        if given is not None:
            if fixed_by_patient.setdefault(patient, given) != given:
                raise ConfigError("the labels CSV puts one patient's images into two splits")
    majority = {p: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for p, c in votes.items()}
    rng = None  # made when a class has two patients to deal: shuffling 0 or 1 draws nothing from it,
    # so one-patient inputs skip numpy.random's import (~10 ms of start-up) with the same result
    target = np.asarray(fractions, dtype=np.float64)
    overall = np.zeros(3)
    chosen: dict[str, int] = dict(fixed_by_patient)
    for cls in sorted(set(majority.values())):
        members = sorted(p for p, m in majority.items() if m == cls and p not in fixed_by_patient)
        if len(members) > 1:
            if rng is None:
                rng = np.random.default_rng(seed)
            members = [members[i] for i in rng.permutation(len(members))]
        within = np.zeros(3)
        for p in members:
            need = target * (within.sum() + 1) - within
            need_all = target * (overall.sum() + 1) - overall
            score = need + 1e-3 * need_all - 1e-9 * np.arange(3)
            score[target == 0] = -np.inf
            s = int(np.argmax(score))
            chosen[p] = s
            within[s] += 1
            overall[s] += 1
    return np.array([chosen[p] for p in patients], dtype=np.uint8)
