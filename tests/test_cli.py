"""The public surface: five stages in --help, --version, lazy imports, exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fresh_interpreter import modules_loaded_after

from medcondense import __version__
from medcondense.store import SCHEMA

STAGES = ("ingest", "distill", "evaluate", "score", "export")


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medcondense", *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_help_lists_every_stage_and_exit_codes() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for stage in STAGES:
        assert stage in result.stdout
    assert "130 interrupted" in result.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_has_help_with_examples(stage: str) -> None:
    result = _run(stage, "--help")
    assert result.returncode == 0, result.stderr
    assert "Examples" in result.stdout and "medcondense " + stage in result.stdout


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"medcondense {__version__}"


def test_help_imports_no_heavy_library() -> None:
    code = (
        "from typer.testing import CliRunner\n"
        "from medcondense.cli import app\n"
        "for stage in (None, 'ingest', 'distill', 'evaluate', 'score', 'export', 'merge'):\n"
        "    args = ['--help'] if stage is None else [stage, '--help']\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0\n"
    )
    assert modules_loaded_after(code, ("torch", "SimpleITK", "pydicom", "nibabel", "h5py", "matplotlib")) == []


def test_schema_version_is_pinned() -> None:
    # A test that fails when the on-disk contract changes without a conscious version bump.
    assert SCHEMA == "medcondense/1"


def test_unknown_option_is_a_usage_error() -> None:
    result = _run("distill", "--no-such-option")
    assert result.returncode == 2


def test_bad_set_option_is_one_line_exit_2(tmp_path) -> None:
    result = _run("distill", str(tmp_path / "data.h5"), "--set", "distill.ipc=ten")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_stage_on_a_file_that_is_not_ours_exits_3(tmp_path) -> None:
    bogus = tmp_path / "data.h5"
    bogus.write_text("not hdf5")
    for args in (["evaluate", str(bogus), "--real", str(bogus)], ["export", str(bogus), "-o", str(tmp_path / "out")]):
        result = _run(*args)
        assert result.returncode == 3, (args, result.stderr)
        assert "not an HDF5 file" in result.stderr and "Traceback" not in result.stderr


def test_distill_and_evaluate_import_no_image_io_library() -> None:
    # They run on GPU machines that may lack pydicom, SimpleITK and nibabel (DESIGN.md).
    code = "import medcondense.distill.pipeline, medcondense.evaluate.pipeline, medcondense.score.pipeline"
    assert modules_loaded_after(code, ("pydicom", "SimpleITK", "nibabel")) == []


def test_stage_packages_and_shared_helpers_import_no_torch() -> None:
    # Package __init__s are docstrings and runkey is plain hashing: the CLI and score can read
    # them without paying for torch; only the stage modules (<stage>/pipeline.py) load it.
    code = "import medcondense.evaluate, medcondense.score, medcondense.distill, medcondense.runkey"
    assert modules_loaded_after(code, ("torch", "h5py", "matplotlib")) == []


@pytest.mark.parametrize(("argv", "built"), [(["ingest", "--help"], ["ingest"]),
                                             (["--help"], ["ingest", "distill", "evaluate", "score", "merge", "export"]),
                                             (["ingst"], ["ingest", "distill", "evaluate", "score", "merge", "export"])])
def test_console_script_builds_only_the_command_it_runs(argv: list[str], built: list[str]) -> None:
    """Start-up: typer converts each registered command before dispatching, so main() builds only
    the one named; help and misspelt names (typer's "Did you mean") still see every command, and
    the shared app keeps all of them for the next command run in the same process."""
    code = (
        "import contextlib, io, sys\n"
        "import typer.main\n"
        "from medcondense import cli\n"
        f"argv = {argv!r}\n"
        "group = typer.main.get_command(cli.app_for(argv))\n"
        "sys.argv = ['medcondense', *argv]\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    try:\n"
        "        cli.main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(','.join(group.commands))\n"
        "print(len(cli.app.registered_commands))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built_here, kept = result.stdout.strip().splitlines()
    assert built_here.split(",") == built
    assert int(kept) == 6


def test_stage_import_pauses_the_collector_and_freezes_what_it_loaded(tmp_path, monkeypatch) -> None:
    """A stage's first import runs with the cyclic GC off; afterwards the collector is back on and
    the module's objects sit in the permanent generation. A failing import leaves the GC as it was."""
    import gc

    from medcondense import cli

    (tmp_path / "stage_probe.py").write_text(
        "import gc\nCOLLECTING = gc.isenabled()\nTABLE = [{'n': i} for i in range(1000)]\n")
    (tmp_path / "stage_broken.py").write_text("raise ImportError('broken stage')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        module = cli._import_stage("stage_probe")
        assert module.COLLECTING is False
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + 1000
        assert cli._import_stage("stage_probe") is module  # imported once
        with pytest.raises(ImportError, match="broken stage"):
            cli._import_stage("stage_broken")
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        sys.modules.pop("stage_probe", None)
        sys.modules.pop("stage_broken", None)
