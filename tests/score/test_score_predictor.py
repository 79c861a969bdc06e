"""The calibration file: schema validation, fitting, leave-one-dataset-out error, --calibrate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medcondense.cli import app
from medcondense.errors import ConfigError
from medcondense.score import predictor


def _measured(gains_by_ipc: dict[int, list[tuple[float, float]]]) -> list[dict]:
    return [{"dataset": f"d{i}", "ipc": ipc, "features": {"random_rel": x}, "gain": y}
            for ipc, rows in gains_by_ipc.items() for i, (x, y) in enumerate(rows)]


def test_shipped_calibration_loads_and_is_valid():
    data, path = predictor.load_calibration()
    assert path.name == "calibration.json" and path.exists()
    assert data["schema"] == predictor.CALIBRATION_SCHEMA
    assert data["features"] == ["random_rel"]
    for model in data["per_ipc"].values():
        assert len(model["coef"]) == 1 and model["loo_mae"] >= 0


@pytest.mark.parametrize("drop", ["per_ipc", "features", "measured"])
def test_missing_key_names_the_file_and_the_key(tmp_path: Path, drop: str):
    data = predictor.fit_calibration(_measured({1: [(0.2, 0.3), (0.5, 0.15), (0.9, 0.0)]}), source="test")
    del data[drop]
    bad = tmp_path / "bad_calibration.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        predictor.load_calibration(bad)
    assert "bad_calibration.json" in str(err.value) and repr(drop) in str(err.value)
    assert err.value.exit_code == 2


def test_missing_model_key_and_bad_json_are_config_errors(tmp_path: Path):
    data = predictor.fit_calibration(_measured({1: [(0.2, 0.3), (0.5, 0.15), (0.9, 0.0)]}), source="test")
    del data["per_ipc"]["1"]["loo_mae"]
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"cal\.json.*per_ipc\['1'\].*'loo_mae'"):
        predictor.load_calibration(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        predictor.load_calibration(bad)


def test_fit_recovers_a_line_and_reports_its_leave_one_dataset_out_error():
    rows = [(x, 0.5 - 0.5 * x) for x in (0.1, 0.3, 0.5, 0.7, 0.9)]
    cal = predictor.fit_calibration(_measured({1: rows}), source="test")
    model = cal["per_ipc"]["1"]
    assert model["coef"][0] == pytest.approx(-0.5, abs=1e-6)
    assert model["intercept"] == pytest.approx(0.5, abs=1e-6)
    assert model["loo_mae"] < 1e-6 < model["loo_mae_constant"]
    assert model["n_datasets"] == 5


def test_too_few_datasets_fit_nothing_and_predictions_say_so():
    cal = predictor.fit_calibration(_measured({1: [(0.2, 0.3), (0.5, 0.1)]}), source="test")
    assert cal["per_ipc"] == {}
    assert predictor.predict_gain(cal, 1, {"random_rel": 0.5})["gain"] is None


def test_prediction_uses_the_nearest_calibrated_ipc_and_says_so():
    rows = [(x, 0.4 - 0.4 * x) for x in (0.1, 0.5, 0.9)]
    cal = predictor.fit_calibration(_measured({1: rows, 10: rows}), source="test")
    exact = predictor.predict_gain(cal, 10, {"random_rel": 0.5})
    assert exact["gain"] == pytest.approx(0.2, abs=1e-3) and "note" not in exact
    near = predictor.predict_gain(cal, 50, {"random_rel": 0.5})
    assert near["ipc_used"] == 10 and "nearest" in near["note"]


def test_calibrate_refits_from_benchmark_results(tmp_path: Path):
    results = tmp_path / "indicator.json"
    results.write_text(json.dumps({"measured": _measured({1: [(0.1, 0.4), (0.5, 0.2), (0.9, 0.05)]})}))
    out = tmp_path / "cal.json"
    predictor.calibrate([results], out)
    data, _ = predictor.load_calibration(out)
    assert "indicator.json" in data["source"] and "1" in data["per_ipc"]
    assert not (tmp_path / "cal.json.tmp").exists()
    (tmp_path / "broken.json").write_text(json.dumps({"measured": [{"dataset": "a", "ipc": 1}]}))
    with pytest.raises(ConfigError, match=r"broken\.json.*'features'"):
        predictor.calibrate([tmp_path / "broken.json"], tmp_path / "x.json")


def test_cli_refits_from_several_results_and_refuses_the_space_separated_form(tmp_path: Path):
    # `--calibrate a.json b.json` would read b.json as DATA; refitting from a.json alone would drop
    # b.json without a word, so the CLI refuses it and names the file it did not read
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"measured": _measured({1: [(0.1, 0.4), (0.5, 0.2)]})}))
    b.write_text(json.dumps({"measured": [{"dataset": "d9", "ipc": 1, "features": {"random_rel": 0.9}, "gain": 0.05}]}))
    out = tmp_path / "cal.json"

    def cli(*args: object):
        return CliRunner().invoke(app, ["score", *map(str, args)])

    wrong = cli("--calibrate", a, b, "-o", out)
    assert wrong.exit_code == 2, wrong.output
    assert "its own --calibrate" in wrong.output and str(b) in wrong.output and "Traceback" not in wrong.output
    assert not out.exists()
    right = cli("--calibrate", a, "--calibrate", b, "-o", out)
    assert right.exit_code == 0, right.output
    data, _ = predictor.load_calibration(out)
    assert data["per_ipc"]["1"]["n_datasets"] == 3  # two from a.json, one from b.json
