"""Tests for medcondense.evaluate.pipeline: accuracy on a separable set, the report, reruns, options, the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app
from medcondense.errors import AlreadyDone, ConfigError
from medcondense.evaluate import pipeline as evaluate
from blob_data import make_blob_set

from evaluate_helpers import REPORT_KEYS, RESULT_KEYS, evaluate_config, make_synthetic, rendered


def test_synthetic_from_real_train_images_reaches_high_accuracy(real_h5, syn_h5):
    # The reference ConvNet; baselines off to keep it quick (they are checked with the MLP below).
    report = evaluate.run(evaluate_config(real_h5, syn_h5, arch="convnet", models=2, epochs=5, baselines=[]))
    assert set(report) == REPORT_KEYS
    (result,) = report["results"]
    assert set(result) == RESULT_KEYS
    assert result["kind"] == "synthetic" and result["method"] == "dm" and result["ipc"] == 5
    assert result["metrics"]["accuracy"]["mean"] >= 0.9
    assert len(result["metrics"]["accuracy"]["values"]) == 2
    assert result["metrics"]["auc"]["mean"] >= 0.9
    assert len(result["metrics"]["per_class_recall"]["mean"]) == 4
    assert report["real"]["test_images"] == 32


def test_report_carries_both_baselines_and_recovery(real_h5, syn_h5):
    report = evaluate.run(evaluate_config(real_h5, syn_h5, epochs=20))
    (result,) = report["results"]
    assert set(result["baselines"]) == {"random", "full"}
    assert result["baselines"]["random"]["ipc"] == 5
    assert result["baselines"]["random"]["train_images"] == 20
    assert result["baselines"]["full"]["train_images"] == 96
    assert result["baselines"]["full"]["metrics"]["accuracy"]["mean"] >= 0.9
    assert result["recovery"]["accuracy"] == pytest.approx(
        result["metrics"]["accuracy"]["mean"] / result["baselines"]["full"]["metrics"]["accuracy"]["mean"]
    )
    assert report["protocol"]["full_baseline"] == {"epochs": 20, "step_budget": 1000, "steps": 20}
    text = rendered(report)
    for expected in ("syn_dm_ipc5.h5", "random", "full", "class3", "recovery"):
        assert expected in text


def test_wrong_labels_score_lower_than_right_ones(tmp_path, real_h5, blob_set, syn_h5):
    scrambled = tmp_path / "scrambled.h5"
    store.write(scrambled, make_synthetic(blob_set, 5, shuffle_labels=True))
    report = evaluate.run(evaluate_config(real_h5, syn_h5, scrambled, epochs=30, baselines=[]))
    right, wrong = (r["metrics"]["accuracy"]["mean"] for r in report["results"])
    assert right > wrong + 0.3
    assert report["results"][0]["baselines"] == {} and report["results"][0]["recovery"] is None


def test_report_and_plot_are_written_and_reruns_skip(tmp_path, real_h5, blob_set, syn_h5):
    syn10 = tmp_path / "syn_dm_ipc10.h5"
    store.write(syn10, make_synthetic(blob_set, 10))
    out = tmp_path / "report.json"
    report = evaluate.run(evaluate_config(real_h5, syn_h5, syn10, output=str(out), models=1, epochs=2))
    assert json.loads(out.read_text())["run_key"] == report["run_key"]
    png = tmp_path / "report.png"
    assert report["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(r["ipc"] for r in report["results"]) == [5, 10]
    with pytest.raises(AlreadyDone):
        evaluate.run(evaluate_config(real_h5, syn_h5, syn10, output=str(out), models=1, epochs=2))
    with pytest.raises(ConfigError, match="--overwrite"):
        evaluate.run(evaluate_config(real_h5, syn_h5, output=str(out), models=1, epochs=2))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "options, message",
    [({"models": 0}, "--models"), ({"arch": "vit"}, "--arch"), ({"train_aug": "mixup"}, "--train-aug"),
     ({"baselines": ["herding"]}, "--baselines"), ({"epochs": 0}, "--epochs")],
)
def test_bad_options_are_config_errors(real_h5, syn_h5, options, message):
    with pytest.raises(ConfigError, match=message):
        evaluate.run(evaluate_config(real_h5, syn_h5, **options))


def _cli(*args: str):
    return CliRunner().invoke(app, ["evaluate", *args])


def test_cli_exit_codes_for_bad_input(tmp_path, real_h5, blob_set, syn_h5):
    small = tmp_path / "small.h5"
    store.write(small, make_synthetic(make_blob_set(size=8), 5))
    not_ours = tmp_path / "notes.h5"
    not_ours.write_text("not hdf5")
    cases = [
        ([str(small), "--real", str(real_h5)], 2, "expected shape"),
        ([str(syn_h5), "--real", str(syn_h5)], 2, "is a synthetic set"),
        ([str(syn_h5), "--real", str(real_h5), "--test-site", "nowhere"], 2, "known sites"),
        ([str(not_ours), "--real", str(real_h5)], 3, "not an HDF5 file"),
        ([str(syn_h5), "--real", str(tmp_path / "missing.h5")], 3, "no such file"),
    ]
    for args, code, message in cases:
        result = _cli(*args, "--device", "cpu")
        assert result.exit_code == code, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output


def test_cli_json_report(real_h5, syn_h5):
    result = _cli(str(syn_h5), "--real", str(real_h5), "--models", "1", "--epochs", "2", "--arch", "mlp",
                  "--baselines", "full", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS
    assert set(report["results"][0]["baselines"]) == {"full"}
