"""``medcondense ingest`` through the CLI: exit codes, one-line errors, --json, re-runs."""

import json

from ingest_helpers import write_series
from typer.testing import CliRunner

from medcondense.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["ingest", *map(str, args)])


def test_empty_folder_exits_3_without_output(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke(tmp_path / "empty", "-o", tmp_path / "out.h5")
    assert result.exit_code == 3
    assert "no readable DICOM or NIfTI" in result.output and "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    assert not list(tmp_path.glob("out.h5*"))


def test_missing_path_exits_3(tmp_path):
    result = invoke(tmp_path / "nope", "-o", tmp_path / "out.h5")
    assert result.exit_code == 3 and "no such file or folder" in result.output


def test_mixed_good_and_bad_exits_4_with_report(tmp_path):
    write_series(tmp_path / "in" / "a", n=3)
    (tmp_path / "in" / "a" / "junk.bin").write_bytes(b"\x00" * 300)
    result = invoke(tmp_path / "in", "-o", tmp_path / "out.h5", "--size", "8", "--json")
    assert result.exit_code == 4
    summary = json.loads(result.stdout)
    assert summary["rejects"] == 1 and summary["images"] == 3 and "exit_code" not in summary
    assert (tmp_path / "out.h5.rejects.csv").read_text().count("junk.bin") == 1


def test_unknown_preset_exits_2(tmp_path):
    write_series(tmp_path / "in" / "a", n=2)
    result = invoke(tmp_path / "in", "-o", tmp_path / "out.h5", "--window", "brian")
    assert result.exit_code == 2 and "unknown window preset 'brian'" in result.output
    assert not (tmp_path / "out.h5").exists()


def test_csv_with_absent_files_exits_2(tmp_path):
    write_series(tmp_path / "in" / "a", n=2)
    (tmp_path / "labels.csv").write_text("path,label\nin/a/nothere.dcm,x\n")
    result = invoke(tmp_path / "in", "-o", tmp_path / "out.h5", "--labels", tmp_path / "labels.csv")
    assert result.exit_code == 2 and "nothere.dcm" in result.output and "labels.csv" in result.output


def test_rerun_is_a_noop_and_table_output(tmp_path):
    write_series(tmp_path / "in" / "a", n=2, patient="A")
    write_series(tmp_path / "in" / "b", n=2, patient="B")
    args = (tmp_path / "in", "-o", tmp_path / "out.h5", "--size", "8")
    first = invoke(*args)
    assert first.exit_code == 0 and "images" in first.stdout
    before = (tmp_path / "out.h5").stat().st_mtime_ns
    again = invoke(*args, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] is True
    assert (tmp_path / "out.h5").stat().st_mtime_ns == before
    changed = invoke(*args, "--window", "bone")
    assert changed.exit_code == 2 and "--overwrite" in changed.output
    assert invoke(*args, "--window", "bone", "--overwrite").exit_code == 0
