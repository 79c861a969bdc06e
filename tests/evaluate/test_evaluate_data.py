"""Tests for medcondense.evaluate.data: the real file, the inputs, sites, mismatches (through run)."""

from __future__ import annotations

import numpy as np
import pytest

from medcondense import store
from medcondense.errors import ConfigError, DataMismatchError, ShapeMismatch, StoreError
from medcondense.evaluate import pipeline as evaluate
from blob_data import make_blob_set

from evaluate_helpers import evaluate_config, make_synthetic


def test_cross_site_tests_one_site(real_h5, syn_h5):
    report = evaluate.run(evaluate_config(real_h5, syn_h5, test_site="siteA", baselines=[]))
    assert report["real"]["test_site"] == "siteA" and report["real"]["test_images"] == 16
    with pytest.raises(ConfigError, match="known sites: siteA, siteB"):
        evaluate.run(evaluate_config(real_h5, syn_h5, test_site="siteC"))


def test_a_file_without_sites_rejects_test_site(tmp_path, blob_set, syn_h5):
    blob_set.meta["site"] = np.array([""] * blob_set.n, dtype=object)
    real = tmp_path / "nosite.h5"
    store.write(real, blob_set)
    with pytest.raises(ConfigError, match="records no site"):
        evaluate.run(evaluate_config(real, syn_h5, test_site="siteA"))


def test_mismatched_inputs_are_clear_errors(tmp_path, real_h5, blob_set, syn_h5):
    small = tmp_path / "small.h5"
    store.write(small, make_synthetic(make_blob_set(size=8), 5))
    with pytest.raises(ShapeMismatch, match=r"expected shape \(1, 16, 16\), got \(1, 8, 8\)"):
        evaluate.run(evaluate_config(real_h5, small))
    renamed = make_synthetic(blob_set, 5)
    renamed.class_names = ["a", "b", "c", "d"]
    other = tmp_path / "other.h5"
    store.write(other, renamed)
    with pytest.raises(DataMismatchError, match="class names"):
        evaluate.run(evaluate_config(real_h5, other))
    with pytest.raises(DataMismatchError, match="is a synthetic set"):
        evaluate.run(evaluate_config(syn_h5, syn_h5))
    no_test = blob_set.select(blob_set.split != store.SPLIT_TEST)
    path = tmp_path / "notest.h5"
    store.write(path, no_test)
    with pytest.raises(DataMismatchError, match="no test split"):
        evaluate.run(evaluate_config(path, syn_h5))


def test_store_errors_name_the_file(tmp_path, real_h5):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(StoreError, match="bad.h5"):
        evaluate.run(evaluate_config(real_h5, bad))
