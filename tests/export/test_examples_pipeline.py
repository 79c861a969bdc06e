"""examples/pipeline: the Makefile's dependency order and the bash script's stop-on-failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "pipeline"
STAGES = ["brain_patches.py", "ingest", "distill", "evaluate", "score", "export"]


def fake_tool(path: Path, fail_on: str | None, code: int) -> Path:
    """A stand-in for medcondense/python that logs its arguments and fails on one stage."""
    path.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{path.parent}/calls.txt"\n'
        + (f'case "$*" in *{fail_on}*) echo "error: simulated" >&2; exit {code};; esac\n' if fail_on else "")
        + "exit 0\n"
    )
    path.chmod(0o755)
    return path


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_runs_the_stages_in_order(tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "-n", "-f", str(PIPELINE / "Makefile"), f"WORK={tmp_path / 'w'}", "IPC=3"],
        capture_output=True, text=True, check=True,
    )
    order = [next(i for i, line in enumerate(result.stdout.splitlines()) if stage in line) for stage in STAGES]
    assert order == sorted(order)
    assert "syn_dm_ipc3.h5" in result.stdout and "--report" in result.stdout


def run_script(tmp_path: Path, fail_on: str | None, code: int = 3) -> subprocess.CompletedProcess:
    tool = fake_tool(tmp_path / "tool", fail_on, code)
    env = {**os.environ, "MEDCONDENSE": str(tool), "PYTHON": str(tool)}
    return subprocess.run(["bash", str(PIPELINE / "run_pipeline.sh"), str(tmp_path / "w")],
                          capture_output=True, text=True, env=env)


def test_script_runs_every_stage_and_logs(tmp_path: Path) -> None:
    result = run_script(tmp_path, fail_on=None)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [Path(c.split()[0]).name for c in calls] == STAGES
    assert "finished" in (tmp_path / "w" / "pipeline.log").read_text()


def test_script_stops_at_the_first_failure_with_its_exit_code(tmp_path: Path) -> None:
    result = run_script(tmp_path, fail_on="distill", code=3)
    assert result.returncode == 3
    calls = (tmp_path / "calls.txt").read_text()
    assert "distill" in calls and "evaluate" not in calls
    log = (tmp_path / "w" / "pipeline.log").read_text()
    assert "FAILED distill with exit code 3" in log and "error: simulated" in log


def test_summary_prints_the_headline_numbers(tmp_path: Path) -> None:
    import json
    import sys

    block = lambda acc: {"accuracy": {"mean": acc, "std": 0.0}}  # noqa: E731
    report = {"results": [{"method": "dm", "ipc": 10, "metrics": block(0.56), "recovery": {"accuracy": 0.772},
                           "baselines": {"random": {"metrics": block(0.53)}, "full": {"metrics": block(0.725)}}}]}
    score = {"syn": {"privacy": {"near_copies": 1, "thresholds": {"ssim": 0.95, "cosine": 0.98}}}}
    (tmp_path / "r.json").write_text(json.dumps(report))
    (tmp_path / "s.json").write_text(json.dumps(score))
    result = subprocess.run([sys.executable, str(PIPELINE / "summary.py"), str(tmp_path / "r.json"), str(tmp_path / "s.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "dm IPC 10: accuracy 56.0 % | random real subset 53.0 % | full train split 72.5 % | recovery 77 %",
        "privacy audit: 1 near-copy of real training images (SSIM >= 0.95 or cosine >= 0.98)",
    ]
    missing = subprocess.run([sys.executable, str(PIPELINE / "summary.py"), str(tmp_path / "absent.json"), str(tmp_path / "s.json")],
                             capture_output=True, text=True)
    assert missing.returncode == 3 and "cannot read" in missing.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_sites_target_runs_per_site_then_merge_then_cross_site_evaluate(tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "-n", "-f", str(PIPELINE / "Makefile"), f"WORK={tmp_path / 'w'}", "IPC=3", "sites",
         "SITES=colin27 colin27_shifted"],
        capture_output=True, text=True, check=True,
    )
    lines = result.stdout.splitlines()
    first = {stage: next(i for i, line in enumerate(lines) if stage in line)
             for stage in ("sites.py", "distill", "merge", "evaluate")}
    assert list(first) == sorted(first, key=first.get)
    assert sum("medcondense distill" in line for line in lines) == 2
    assert "--sites colin27,colin27_shifted" in result.stdout
    evaluate = next(line for line in lines if "medcondense evaluate" in line)
    assert evaluate.count("--real") == 2 and "syn_merged_dm_ipc3.h5" in evaluate and "real_merged.h5" in evaluate
