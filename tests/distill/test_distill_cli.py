"""``medcondense distill`` from the command line: exit codes, short form, --json, --config."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from distill_helpers import write_blob
from medcondense.cli import app

FAST = ["--ipc", "2", "--iterations", "2", "--batch-real", "8", "--device", "cpu"]


def _invoke(*args: str):
    return CliRunner().invoke(app, ["distill", *args])


def test_short_form_reads_data_h5_and_writes_the_default_name(tmp_path):
    write_blob(tmp_path / "data.h5")
    result = _invoke("--method", "dm", *FAST, "--workdir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["output"] == str(tmp_path / "syn_dm_ipc2.h5")
    assert (tmp_path / "syn_dm_ipc2.h5").exists()
    assert summary["kind"] == "synthetic" and summary["num_images"] == 8
    again = _invoke("--method", "dm", *FAST, "--workdir", str(tmp_path), "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] is True


def test_synthetic_input_exits_2(tmp_path):
    data = write_blob(tmp_path / "data.h5")
    assert _invoke(str(data), "--method", "dm", *FAST, "-o", str(tmp_path / "syn.h5")).exit_code == 0
    result = _invoke(str(tmp_path / "syn.h5"), "--method", "dm", *FAST, "-o", str(tmp_path / "syn2.h5"))
    assert result.exit_code == 2
    assert "is a synthetic set" in result.output and "Traceback" not in result.output


def test_ipc_too_large_exits_2(tmp_path):
    data = write_blob(tmp_path / "data.h5", per_class=(3, 1, 1))
    result = _invoke(str(data), "--method", "dc", "--ipc", "10", "--device", "cpu", "-o", str(tmp_path / "s.h5"))
    assert result.exit_code == 2 and "larger than the train images" in result.output
    assert not (tmp_path / "s.h5").exists()


def test_missing_input_exits_3(tmp_path):
    result = _invoke(str(tmp_path / "missing.h5"), "--method", "dm", *FAST)
    assert result.exit_code == 3 and "no such file" in result.output


def test_unknown_method_and_aug_exit_2(tmp_path):
    data = write_blob(tmp_path / "data.h5")
    assert _invoke(str(data), "--method", "gan", *FAST).exit_code == 2
    result = _invoke(str(data), "--method", "dsa", "--aug", "color,warp", *FAST)
    assert result.exit_code == 2 and "warp" in result.output


def test_yaml_config_sets_options(tmp_path):
    data = write_blob(tmp_path / "data.h5")
    (tmp_path / "d.yaml").write_text("distill: {method: random, ipc: 3}\n")
    result = _invoke(str(data), "--config", str(tmp_path / "d.yaml"), "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "random" and summary["kind"] == "subset" and summary["num_images"] == 12


def test_subprocess_table_output(tmp_path):
    data = write_blob(tmp_path / "data.h5")
    done = subprocess.run(
        [sys.executable, "-m", "medcondense", "distill", str(data), "--method", "herding", "--ipc", "2",
         "--device", "cpu", "-o", str(tmp_path / "h.h5")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "herding" in done.stdout and "subset" in done.stdout
