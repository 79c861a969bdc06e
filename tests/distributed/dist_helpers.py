"""Helpers for the torchrun tests: real torchrun processes (gloo, 2 ranks) and plain runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
WRAPPER = HERE / "rank_wrapper.py"


def env(**extra: str) -> dict[str, str]:
    """This checkout first on the path; one thread on both sides of every equality test (a
    different thread count alone changes the reduction order)."""
    values = dict(os.environ)
    values["PYTHONPATH"] = str(SRC) + os.pathsep + values.get("PYTHONPATH", "")
    values["OMP_NUM_THREADS"] = "1"
    values["MEDCONDENSE_DIST_TIMEOUT"] = "120"
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        values.pop(name, None)
    values.update(extra)
    return values


def plain(*args: str, cwd: Path) -> subprocess.Popen:
    """``python -m medcondense ARGS`` as one process (started, not waited for)."""
    return subprocess.Popen([sys.executable, "-m", "medcondense", *map(str, args)], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def torchrun(*args: str, cwd: Path, nproc: int = 2, rc_dir: Path | None = None, new_session: bool = False) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node N -m medcondense ARGS`` (started, not waited for).

    With ``rc_dir`` each worker runs through :mod:`rank_wrapper`, which records its exit code.
    """
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    if rc_dir is not None:
        rc_dir.mkdir(parents=True, exist_ok=True)
        command = [*launcher, "--no-python", sys.executable, str(WRAPPER), str(rc_dir), *map(str, args)]
    else:
        command = [*launcher, "-m", "medcondense", *map(str, args)]
    return subprocess.Popen(command, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def launch_failed(name: str, err: str, head_lines: int = 25) -> str:
    """An assertion message for a failed launch: its whole stderr, then its first lines again.

    A rank's own error comes before torchrun's failure summary, and logs that keep only a failure's
    last lines (CI) would show nothing but the summary; repeating the head last keeps the cause.
    """
    head = [line for line in err.splitlines() if line.strip()][:head_lines]
    return f"{name} failed; its stderr:\n{err}\n--- its first {len(head)} lines again ---\n" + "\n".join(head)


def rank_codes(rc_dir: Path, nproc: int = 2) -> list[int]:
    return [int((rc_dir / f"rank{r}.rc").read_text()) for r in range(nproc)]


def one_json(stdout: str) -> dict:
    """stdout holds exactly one JSON document (json.loads fails on two)."""
    return json.loads(stdout)


def leftovers(folder: Path) -> list[str]:
    """Checkpoints, temporaries and lock files under ``folder``."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".ckpt", ".tmp", ".lock")))
