"""``score`` end to end: result keys, input checks, the CLI with --json and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medcondense.score import pipeline as score
from medcondense.errors import ConfigError, DataMismatchError, StoreError

from score_helpers import quick_config, write_syn


def test_before_distilling_reports_indicator_proxies_and_prediction(real_h5: Path, tmp_path: Path):
    out = tmp_path / "score.json"
    result = score.run(quick_config(real_h5, ipc=[1, 4], output=str(out)))
    assert [row["ipc"] for row in result["ipc"]] == [1, 4]
    row = result["ipc"][0]
    assert set(row) == {"ipc", "random_accuracy", "random_rel", "proxies", "predicted_gain"}
    assert row["random_rel"] >= 0.9
    assert set(row["proxies"]) == {"prototype_accuracy", "prototype_ratio", "kcenter_radius"}
    assert set(result["proxies"]) == {"fisher_ratio", "knn_accuracy", "intra_diversity"}
    assert result["full_data"]["accuracy"] >= 0.9 and result["syn"] is None
    assert json.loads(out.read_text())["ipc"][1]["ipc"] == 4
    assert result["exit_code"] == 0


def test_the_real_file_must_be_real(tmp_path: Path, noise_syn: Path):
    with pytest.raises(DataMismatchError, match="noise.h5: is a synthetic set") as info:
        score.run(quick_config(noise_syn))
    assert info.value.exit_code == 2


def test_mismatched_classes_and_shapes_are_refused(real_h5: Path, blob_set, tmp_path: Path):
    rng = np.random.default_rng(0)
    other = write_syn(tmp_path / "other.h5", rng.random((4, 1, 16, 16)), ["a", "b", "c", "d"])
    with pytest.raises(DataMismatchError, match="other.h5: class names"):
        score.run(quick_config(real_h5, syn=str(other), ipc=[]))
    big = write_syn(tmp_path / "big.h5", rng.random((4, 1, 32, 32)), blob_set.class_names)
    with pytest.raises(DataMismatchError, match=r"big.h5: .*expected shape \(1, 16, 16\)"):
        score.run(quick_config(real_h5, syn=str(big), ipc=[]))
    with pytest.raises(StoreError, match="no such file"):
        score.run(quick_config(tmp_path / "missing.h5"))


def test_bad_options_are_config_errors(real_h5: Path):
    with pytest.raises(ConfigError, match="--ipc"):
        score.run(quick_config(real_h5, ipc=[0]))
    with pytest.raises(ConfigError, match="--calibrate needs -o"):
        score.run(quick_config(real_h5, calibrate=["x.json"]))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medcondense", "score", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_json_and_fail_on_copies_exit_5(real_h5: Path, copy_syn: Path):
    proc = _cli(str(real_h5), str(copy_syn), "--ipc", "1", "--repeats", "1", "--epochs", "5",
                "--set", "score.full_steps=10", "--device", "cpu", "--json", "--fail-on-copies")
    assert proc.returncode == 5, proc.stderr
    result = json.loads(proc.stdout)
    assert result["syn"]["privacy"]["near_copies"] == 1
    assert "near-cop" in proc.stderr


def test_cli_bad_calibration_is_one_line_and_exit_2(real_h5: Path, tmp_path: Path):
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"schema": "medcondense-calibration/1", "features": ["random_rel"]}))
    proc = _cli(str(real_h5), "--calibration", str(bad))
    assert proc.returncode == 2
    assert "cal.json" in proc.stderr and "'per_ipc'" in proc.stderr and "Traceback" not in proc.stderr
