"""The paper's indicator: random real subsets vs a full-data model (evaluate's baselines)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from medcondense import store
from medcondense.config import EvaluateConfig
from medcondense.evaluate import baselines
from medcondense.evaluate import pipeline as evaluate
from medcondense.score import pipeline as score

from score_helpers import quick_config


def test_indicator_is_near_one_on_a_trivially_separable_set(real_h5):
    result = score.run(quick_config(real_h5, repeats=2))
    row = result["ipc"][0]
    assert result["full_data"]["accuracy"] >= 0.95
    assert row["random_rel"] >= 0.9
    assert len(row["random_accuracy"]["runs"]) == 2


def test_indicator_is_near_chance_when_labels_carry_no_signal(tmp_path, blob_set):
    rng = np.random.default_rng(0)
    noise = dataclasses.replace(blob_set, labels=rng.permutation(blob_set.labels))
    path = tmp_path / "noise.h5"
    store.write(path, noise)
    result = score.run(quick_config(path))
    assert result["ipc"][0]["random_accuracy"]["mean"] < 0.6


def test_score_and_evaluate_share_one_cached_baseline(real_h5, tmp_path, monkeypatch):
    score.run(quick_config(real_h5, repeats=1, epochs=10, full_steps=20))
    cache = json.loads((tmp_path / "data.h5.baselines.json").read_text())
    assert len(cache["entries"]) == 2  # full + random at IPC 1

    def must_not_train(*args, **kwargs):
        raise AssertionError("the baseline should come from the cache")

    monkeypatch.setattr(baselines, "_full_baseline", must_not_train)
    monkeypatch.setattr(baselines, "_random_baseline", must_not_train)
    again = score.run(quick_config(real_h5, repeats=1, epochs=10, full_steps=20))
    assert again["full_data"]["cached"] and again["ipc"][0]["random_accuracy"]["cached"]
    syn = tmp_path / "syn.h5"
    train = store.read(real_h5).part(store.SPLIT_TRAIN)
    picked = np.concatenate([np.flatnonzero(train.labels == k)[:1] for k in range(4)])
    store.write(syn, dataclasses.replace(train.select(picked), kind="subset", attrs={**train.attrs, "ipc": 1}))
    report = evaluate.run(EvaluateConfig(inputs=[str(syn)], real=str(real_h5), models=1, epochs=10, device="cpu", full_steps=20))
    assert report["results"][0]["baselines"]["full"]["cached"] is True
