"""The fast predictor (#17): a training-free proxy model, its stated error, its agreement with the full one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcondense.score import pipeline, predictor

from score_helpers import quick_config


def test_shipped_fast_model_states_an_error_that_beats_the_constant():
    calibration, _ = predictor.load_calibration()
    fast = predictor.model_for(calibration, "fast")
    assert fast is not None and fast["features"] == predictor.FAST_FEATURES
    for ipc, model in fast["per_ipc"].items():
        assert model["loo_mae"] < model["loo_mae_constant"], f"IPC {ipc}: no better than the mean gain"


def test_fast_and_full_agree_within_the_stated_error_on_the_measured_tasks():
    """The fixture: the 10 tasks x 2 IPCs of the indicator study, as measured (their features).
    Each prediction is stated as gain +- its LOO MAE; the two intervals meet on >= 90 % of them."""
    calibration, _ = predictor.load_calibration()
    rows = calibration["measured"]
    agree = 0
    for row in rows:
        fast = predictor.predict_gain(calibration, row["ipc"], row["features"], "fast")
        full = predictor.predict_gain(calibration, row["ipc"], row["features"], "full")
        assert not fast.get("extrapolated") and not full.get("extrapolated")
        agree += abs(fast["gain"] - full["gain"]) <= fast["loo_mae"] + full["loo_mae"]
    assert len(rows) >= 20 and agree >= 0.9 * len(rows), f"{agree}/{len(rows)}"


def test_fast_mode_trains_nothing_and_flags_a_set_outside_the_calibration(real_h5: Path):
    fast = pipeline.run(quick_config(real_h5, ipc=[1, 10], indicator="fast"))
    assert fast["indicator"] == "fast" and fast["full_data"] is None and fast["indicator_seconds"] == 0.0
    full = pipeline.run(quick_config(real_h5, ipc=[1, 10], indicator="full"))
    for quick_row, slow_row in zip(fast["ipc"], full["ipc"]):
        assert "random_accuracy" not in quick_row and "random_accuracy" in slow_row
        a, b = quick_row["predicted_gain"], slow_row["predicted_gain"]
        assert (a["indicator"], b["indicator"]) == ("fast", "full")
        # the toy blobs are trivially separable (k-NN accuracy 1.0, random/full 1.0): outside every
        # measured task, so both predictions say they extrapolate instead of pretending
        assert a["extrapolated"] and "knn_accuracy" in a["note"]
        assert b["extrapolated"] and "random_rel" in b["note"]


def test_a_calibration_without_a_fast_model_says_so(real_h5: Path, tmp_path: Path):
    calibration, _ = predictor.load_calibration()
    calibration.pop("indicators")
    path = tmp_path / "old.json"
    path.write_text(json.dumps(calibration))
    row = pipeline.run(quick_config(real_h5, indicator="fast", calibration=str(path)))["ipc"][0]
    assert row["predicted_gain"]["gain"] is None and "--indicator full" in row["predicted_gain"]["note"]


def test_an_unknown_indicator_is_refused(real_h5: Path):
    from medcondense.errors import ConfigError

    with pytest.raises(ConfigError, match="--indicator 'slow'"):
        pipeline.run(quick_config(real_h5, indicator="slow"))
