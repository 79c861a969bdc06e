"""medcondense.cli_values: plain option values without pydantic, with typer's results and errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from medcondense import cli

# (command, argv) covering every plain kind: str, int, float, Path, bool flags, lists, counts,
# options left out (None), and the edge cases the plain converter leaves to typer
ACCEPTED = [
    ["ingest", "a", "b/c", "-o", "out.h5", "--size", "64", "--spacing", "0.7", "--window", "40/400",
     "--workers", "+2", "--seed", "-0", "--study", "1.2.3", "--study", "4.5", "--config", "x.yaml",
     "--set", "ingest.size=32", "-vv", "--overwrite", "--json"],
    ["ingest", "ünïcode dir", "--spacing", "1e-3", "--axis", "007", "--labels", "labels.csv", "--no-overwrite"],
    ["ingest", "x", "--spacing", "inf", "-o", ""],
    ["ingest", "x", "--spacing", ".5", "--size", " 64 "],
    ["distill", "data.h5", "--ipc", "10", "--lr-img", "100", "--dp-epsilon", "1.5E+1", "--method", "dm"],
    ["evaluate", "syn.h5", "--real", "data.h5", "--lr", "0.01", "--models", "3"],
    ["score", "data.h5", "syn.h5", "--ssim-threshold", "0.9", "--calibrate", "a.h5", "--calibrate", "b.h5"],
    ["export", "syn.h5", "--format", "png", "--png-bits", "16"],
    ["merge", "a.h5", "b.h5", "-o", "m.h5"],
    ["distill", "d.h5", "--ipc", "9" * 30],  # past the plain converter's 18 digits: typer's, accepted
]
REFUSED = [
    ["ingest", "x", "--size", "abc"],
    ["ingest", "x", "--size", "1.5"],
    ["ingest", "x", "--spacing", "1,5"],
]


def _parse(argv: list[str], plain: bool) -> dict:
    """The values typer hands to the command: with cli_values (plain) or typer's own converters."""
    group = typer.main.get_command(cli.app)
    command = group.commands[argv[0]]
    if not plain:
        for param in command.params:
            param._runtime_param = None  # typer builds its own (pydantic) converter on use
    assert any(type(getattr(p, "_runtime_param", None)).__name__ == "PlainValue" for p in command.params) == plain
    with command.make_context(argv[0], list(argv[1:])) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("argv", ACCEPTED, ids=lambda a: " ".join(a)[:40])
def test_plain_values_are_typers_values(argv: list[str]) -> None:
    ours, typers = _parse(argv, plain=True), _parse(argv, plain=False)
    assert ours == typers
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in typers.items()}


@pytest.mark.parametrize("argv", REFUSED, ids=lambda a: " ".join(a)[:40])
def test_bad_values_get_typers_message(argv: list[str]) -> None:
    messages = []
    for plain in (True, False):
        with pytest.raises(Exception) as caught:
            _parse(argv, plain)
        messages.append((type(caught.value).__name__, caught.value.format_message()))
    assert messages[0] == messages[1]
    assert "Invalid value" in messages[0][1]


def test_typers_path_checks_still_apply(tmp_path: Path) -> None:
    # an existing path goes through typer's own checks (readable, ...), not around them
    values = _parse(["ingest", str(tmp_path), "-o", str(tmp_path / "o.h5"), "--labels", str(tmp_path)], plain=True)
    assert values["output"] == tmp_path / "o.h5" and values["labels_csv"] == tmp_path


def test_a_command_run_imports_no_pydantic(tmp_path: Path) -> None:
    # typer builds a pydantic TypeAdapter per option; medcondense's plain values skip the import
    # (0.1 s of every command's start-up). An ingest of a missing folder parses every kind of
    # option, then exits 3.
    argv = ["medcondense", "ingest", str(tmp_path / "missing"), "-o", str(tmp_path / "o.h5"), "--size", "32",
            "--spacing", "0.5", "--set", "ingest.seed=1", "--overwrite", "-v", "--json"]
    probe = (f"import sys\nsys.argv = {argv!r}\nfrom medcondense.cli import main\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
             "print(code, 'pydantic' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.split()[-2:] == ["3", "False"], result.stdout + result.stderr
