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


def test_one_patient_split_imports_no_random_and_dealing_is_unchanged() -> None:
    """The patient shuffle's generator is made only when a class has two patients to deal (#16
    start-up): a one-patient input never imports numpy.random, and with several patients the
    splits are those of a generator made up front (shuffling 0 or 1 item draws nothing)."""
    import subprocess
    import sys

    from medcondense.ingest import split

    code = ("import sys\nfrom medcondense.ingest import split\n"
            "eager = 'numpy.random' in sys.modules  # numpy 1.x imports it with numpy\n"
            "codes = split.assign(['p'] * 5, [0, 1, 1, 0, 1], [None] * 5, (0.7, 0.15, 0.15))\n"
            "print(codes.tolist(), 'numpy.random' in sys.modules and not eager)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[0,", "0,", "0,", "0,", "0]", "False"]

    # a mixed cohort (classes with one and with several patients), pinned to the splits the code
    # gave before the generator was made lazily
    patients = ["p5", "p2", "p6", "p0", "p1", "p8", "p1", "p5", "p0", "p8", "p3", "p0", "p1", "p6", "p6", "p1",
                "p3", "p1", "p8", "p6", "p0", "p1", "p3", "p0"]
    labels = [2, 2, 1, 0, 0, 0, 2, 0, 1, 1, 0, 2, 0, 2, 1, 2, 2, 0, 0, 2, 2, 2, 0, 1]
    pinned = {0: [0, 0, 0, 1, 1, 2, 1, 0, 1, 2, 0, 1, 1, 0, 0, 1, 0, 1, 2, 0, 1, 1, 0, 1],
              1: [0, 0, 1, 0, 0, 2, 0, 0, 0, 2, 1, 0, 0, 1, 1, 0, 1, 0, 2, 1, 0, 0, 1, 0]}
    for seed, codes in pinned.items():
        assert split.assign(patients, labels, [None] * len(patients), (0.6, 0.2, 0.2), seed).tolist() == codes
