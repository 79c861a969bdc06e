"""SIGTERM to ingest --workers 2: exit 130, no worker survives, no temporary, output unchanged."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rel_helpers import cli_command, cli_env, leftovers, one_clean_line, write_nifti


def _children(pid: int) -> set[int]:
    """Child process ids of ``pid`` (Linux /proc)."""
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids.update(int(k) for k in (task / "children").read_text().split())
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it runs no code, holds no files)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_sigterm_to_ingest_with_workers_stops_every_process_and_keeps_the_old_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # enough work that the workers are still busy when SIGTERM comes (16 files finished within
    # 0.3 s of the workers starting on an idle machine once ingest read each file only once)
    for k in range(64):
        write_nifti(tmp_path / "in" / ("a" if k % 2 else "b") / f"p{k}.nii", rng.random((160, 160, 24)).astype(np.float32))
    out = tmp_path / "out" / "data.h5"
    out.parent.mkdir()
    out.write_bytes(b"previous output")
    proc = subprocess.Popen(
        cli_command("ingest", tmp_path / "in", "-o", out, "--size", "16", "--workers", "2", "--overwrite"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) >= 2, "the two workers never started"
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    one_clean_line(stderr, "terminated (SIGTERM)", f"{out} unchanged")
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]
    assert out.read_bytes() == b"previous output"
    assert not leftovers(tmp_path)


#: run in a child process: a hang there is the bug, and must not hang pytest's own exit
PARTIAL_RESULT_SCRIPT = """
import os, struct, time
from concurrent.futures import ProcessPoolExecutor
from medcondense.ingest.pipeline import stop_pool

pool = ProcessPoolExecutor(max_workers=2)
pool.submit(time.sleep, 30)
while len(pool._processes) < 2:
    time.sleep(0.01)
# what a worker killed half-way through sending its result leaves behind: a message header
# promising 1,000 bytes, and one of them
os.write(pool._result_queue._writer.fileno(), struct.pack("!i", 1000) + b"x")
time.sleep(0.5)  # the pool's manager thread is now blocked reading the rest
stop_pool(pool)
print("stopped", flush=True)
"""


def test_stopping_the_pool_after_a_worker_died_mid_message_lets_the_process_exit(tmp_path: Path) -> None:
    """SIGTERM while a worker sends its result (seen under load): the worker dies mid-message,
    the pool's manager thread waits for the rest forever, and Python's exit joins that thread.
    stop_pool must turn the wait into end-of-file, so the process exits."""
    script = tmp_path / "partial_result.py"
    script.write_text(PARTIAL_RESULT_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the process did not exit after stop_pool: the manager thread still waits") from None
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "stopped"
