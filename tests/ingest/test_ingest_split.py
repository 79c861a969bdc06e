import numpy as np
import pytest

from medcondense.errors import ConfigError
from medcondense.ingest.split import assign, check_fractions


def cohort(n_patients=40, per_patient=5):
    patients = [f"p{i}" for i in range(n_patients) for _ in range(per_patient)]
    labels = [i % 2 for i in range(n_patients) for _ in range(per_patient)]
    return patients, labels


def test_no_patient_in_two_splits_and_fractions():
    patients, labels = cohort()
    codes = assign(patients, labels, [None] * len(patients), (0.6, 0.2, 0.2), seed=1)
    by_patient = {}
    for p, c in zip(patients, codes):
        assert by_patient.setdefault(p, c) == c
    counts = np.bincount(list(by_patient.values()), minlength=3)
    assert counts.tolist() == [24, 8, 8]
    for split in range(3):  # stratified: both classes in every split
        assert {lab for lab, c in zip(labels, codes) if c == split} == {0, 1}


def test_seeded_and_deterministic():
    patients, labels = cohort()
    a = assign(patients, labels, [None] * len(patients), (0.7, 0.15, 0.15), seed=3)
    b = assign(patients, labels, [None] * len(patients), (0.7, 0.15, 0.15), seed=3)
    c = assign(patients, labels, [None] * len(patients), (0.7, 0.15, 0.15), seed=4)
    assert (a == b).all() and not (a == c).all()


def test_csv_split_wins_and_conflicts_raise():
    patients, labels = cohort(10, 2)
    fixed = [2 if p == "p0" else None for p in patients]
    codes = assign(patients, labels, fixed, (1.0, 0.0, 0.0))
    assert set(codes[:2]) == {2} and set(codes[2:]) == {0}
    fixed[1] = 1
    with pytest.raises(ConfigError, match="two splits"):
        assign(patients, labels, fixed, (1.0, 0.0, 0.0))


def test_fractions_are_checked():
    # #18: fractions must now sum to 1 (within rounding); 7,1.5,1.5 used to be scaled silently
    assert check_fractions([0.7, 0.15, 0.15]) == pytest.approx((0.7, 0.15, 0.15))
    assert sum(check_fractions([0.33, 0.33, 0.33])) == pytest.approx(1.0)
    for bad in ([0, 0.5, 0.5], [0.5, 0.5], [0.8, -0.1, 0.3], [7, 1.5, 1.5], [0.9, 0.9, 0.9],
                [float("nan"), 0.5, 0.5], [float("inf"), 0, 0]):
        with pytest.raises(ConfigError):
            check_fractions(bad)
