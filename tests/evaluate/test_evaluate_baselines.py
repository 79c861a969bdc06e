"""Tests for medcondense.evaluate.baselines: the cache by content hash, the full baseline's step budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcondense.evaluate import baselines
from medcondense.evaluate import pipeline as evaluate

from evaluate_helpers import evaluate_config


def test_baselines_are_cached_by_content_hash(real_h5, syn_h5, monkeypatch):
    first = evaluate.run(evaluate_config(real_h5, syn_h5))
    cache = Path(str(real_h5) + ".baselines.json")
    assert cache.exists() and len(json.loads(cache.read_text())["entries"]) == 2

    def must_not_train(*args, **kwargs):
        raise AssertionError("baseline retrained although cached")

    monkeypatch.setattr(baselines, "_full_baseline", must_not_train)
    monkeypatch.setattr(baselines, "_random_baseline", must_not_train)
    second = evaluate.run(evaluate_config(real_h5, syn_h5))
    base1, base2 = first["results"][0]["baselines"], second["results"][0]["baselines"]
    assert base2["full"]["cached"] is True and base1["full"]["cached"] is False
    assert base2["full"]["metrics"] == base1["full"]["metrics"]
    with pytest.raises(AssertionError, match="retrained"):
        evaluate.run(evaluate_config(real_h5, syn_h5, epochs=7))  # other epochs: another cache key


def test_full_baseline_budget_is_a_step_count():
    assert baselines.full_baseline_epochs(96, 300, 256, 1000) == 300
    assert baselines.full_baseline_epochs(50_000, 300, 256, 1000) == 6  # 196 batches an epoch
    assert baselines.full_baseline_epochs(10**7, 300, 256, 1000) == 1
