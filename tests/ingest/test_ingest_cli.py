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


def _blas_threads_seen_by_ingest(tmp_path, env_value):
    """OPENBLAS_NUM_THREADS as an ingest process (a real subprocess, numpy not yet imported) sees it."""
    import os
    import subprocess
    import sys

    write_series(tmp_path / "in", n=2)
    probe = ("import os, sys\n"
             f"sys.argv = ['medcondense', 'ingest', {str(tmp_path / 'in')!r}, '-o', {str(tmp_path / 'o.h5')!r}, "
             "'--size', '8', '--quiet', '--overwrite']\n"
             "from medcondense.cli import main\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
             "import numpy\n"
             "print(code, os.environ.get('OPENBLAS_NUM_THREADS'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    return result.stdout.split()[-2:], result.stderr


def test_ingest_asks_one_blas_thread_unless_the_user_set_it(tmp_path):
    # ingest does no linear algebra: numpy's OpenBLAS pool is start-up time for nothing
    seen, err = _blas_threads_seen_by_ingest(tmp_path / "a", None)
    assert seen == ["0", "1"], err
    seen, err = _blas_threads_seen_by_ingest(tmp_path / "b", "3")
    assert seen == ["0", "3"], err
