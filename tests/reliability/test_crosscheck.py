"""Inputs checked against each other (unit level; the CLI rows are in test_table.py)."""

from __future__ import annotations

import dataclasses

import pytest
from blob_data import make_blob_set

from medcondense.crosscheck import check_against_real
from medcondense.errors import DataMismatchError


def _real(**attrs):
    s = make_blob_set()
    return dataclasses.replace(s, attrs={**s.attrs, "content_hash": "r" * 64, **attrs})


def _syn(real, **attrs):
    return dataclasses.replace(real, kind="synthetic", attrs={**real.attrs, "source_hash": real.attrs["content_hash"], **attrs})


def test_a_set_made_from_the_real_set_passes() -> None:
    real = _real(normalization={"method": "zscore", "params": {"mean": 10.0, "std": 2.0}})
    assert check_against_real(_syn(real), "syn.h5", real, "data.h5") == []


def test_other_class_names_name_both_files_and_both_sides() -> None:
    real = _real()
    other = dataclasses.replace(_syn(real), class_names=["w", "x", "y", "z"])
    with pytest.raises(DataMismatchError) as info:
        check_against_real(other, "syn.h5", real, "data.h5")
    text = str(info.value)
    assert "['w', 'x', 'y', 'z'] in syn.h5 vs ['class0', 'class1', 'class2', 'class3'] in data.h5" in text
    assert info.value.exit_code == 2 and "--allow-mismatch" in text


def test_another_intensity_space_is_refused_unless_allowed() -> None:
    real = _real(normalization={"method": "zscore", "params": {"mean": 10.0, "std": 2.0}})
    other = _syn(real, normalization={"method": "window", "params": {}})
    with pytest.raises(DataMismatchError, match="intensity space: normalization 'window' in syn.h5 vs 'zscore' in data.h5"):
        check_against_real(other, "syn.h5", real, "data.h5")
    warnings = check_against_real(other, "syn.h5", real, "data.h5", allow_mismatch=True)
    assert warnings and "--allow-mismatch" in warnings[0]
    shifted = _syn(real, normalization={"method": "zscore", "params": {"mean": 60.0, "std": 2.0}})
    with pytest.raises(DataMismatchError, match="zscore params"):
        check_against_real(shifted, "syn.h5", real, "data.h5")


def test_another_source_warns_in_evaluate_and_is_refused_for_the_privacy_audit() -> None:
    real = _real()
    other = _syn(real, source_hash="x" * 64)
    warnings = check_against_real(other, "syn.h5", real, "data.h5")
    assert len(warnings) == 1 and "made from another set" in warnings[0]
    with pytest.raises(DataMismatchError, match="made from another set"):
        check_against_real(other, "syn.h5", real, "data.h5", source_must_match=True)
