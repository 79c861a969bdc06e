"""Safe writes through the real CLI: planted symlinks, a held lock, a full disk, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from rel_helpers import cli_command, cli_env, leftovers, one_clean_line, run_cli
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app

SRC = Path(__file__).resolve().parents[2] / "src"


def _ingest(*args: str):
    return CliRunner().invoke(app, ["ingest", *[str(a) for a in args]])


def test_ingest_does_not_follow_a_symlink_planted_at_any_old_temporary_name(tmp_path: Path, cohort: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out" / "data.h5"
    out.parent.mkdir()
    for name in ("data.h5.tmp", f"data.h5.tmp-{os.getpid()}", ".data.h5.tmp"):
        (out.parent / name).symlink_to(victim)
    result = _ingest(cohort, "-o", out, "--size", "12")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    assert store.read(out).n > 0
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["data.h5", "data.h5.tmp", f"data.h5.tmp-{os.getpid()}", ".data.h5.tmp"])


def test_a_second_ingest_to_the_same_output_exits_2_while_the_first_writes(tmp_path: Path, cohort: Path) -> None:
    out = tmp_path / "data.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time\nfrom medcondense.atomic import output_lock\n"
         f"with output_lock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True, env=cli_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = _ingest(cohort, "-o", out, "--size", "12", "--overwrite")
        assert result.exit_code == 2, result.output
        one_clean_line(result.stderr, f"another medcondense is writing {out}")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()


def test_full_disk_ingest_exits_1_with_no_space_left_and_leaves_nothing(full_disk: Path, cohort: Path) -> None:
    out = full_disk / "data.h5"
    result = run_cli("ingest", cohort, "-o", out, "--size", "12")
    assert result.returncode == 1, result.stderr
    one_clean_line(result.stderr, f"no space left on {full_disk}")
    assert not out.exists() and not leftovers(full_disk)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_full_disk_distill_exits_1_with_no_space_left_and_leaves_nothing(full_disk: Path, real_h5: Path) -> None:
    # in-process (torch is loaded already); the subprocess test above covers "never a segfault"
    out = full_disk / "syn.h5"
    result = CliRunner().invoke(app, ["distill", str(real_h5), "-o", str(out), "--method", "random", "--ipc", "20"])
    assert result.exit_code == 1, result.output
    one_clean_line(result.stderr, f"no space left on {full_disk}")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_sigterm_during_distill_exits_130_keeps_a_checkpoint_and_no_temporary(tmp_path: Path, real_h5: Path) -> None:
    out = tmp_path / "syn.h5"
    proc = subprocess.Popen(
        cli_command("distill", real_h5, "-o", out, "--method", "dm", "--ipc", "1", "--iterations", "100000",
                    "--checkpoint-every", "1", "--device", "cpu", "--compile", "off"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    ckpt = out.with_name(out.name + ".ckpt")
    try:
        for _ in range(1200):  # wait (up to 120 s on a loaded machine) for the first checkpoint
            if ckpt.exists() or proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"])
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    one_clean_line(stderr, "interrupted")
    assert ckpt.exists() and not out.exists()
    assert not leftovers(tmp_path)
