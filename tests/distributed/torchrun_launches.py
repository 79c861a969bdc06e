"""The launches of test_torchrun.py, started with the package's first test (conftest.py).

One thread per torchrun scenario, a few at a time; the one-process side of every comparison
("the same command without torchrun", and the ``--resume`` in one process after an
interruption) goes through one plain_runner.py process, which pays the torch import once. A
scenario returns what its test asserts on and asserts nothing itself, so a failure
is reported by the test it belongs to. Both sides of every comparison run with
OMP_NUM_THREADS=1 (dist_helpers.env).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from medcondense import store

from blob_data import make_blob_set
from dist_helpers import HERE, env, finish, launch_failed, torchrun

# 4 classes, 8 px, few images: an iteration takes milliseconds, start-up dominates
DM = ["--method", "dm", "--ipc", "2", "--iterations", "20", "--batch-real", "8", "--device", "cpu", "-q"]
EXACT = ["--amp", "off", "--compile", "off", "--batch-classes", "off"]
DM_CHECKPOINTED = [*DM, *EXACT, "--checkpoint-every", "2"]
DSA = ["--method", "dsa", "--ipc", "2", "--iterations", "2", "--outer-loop", "2", "--inner-loop", "1",
       "--batch-real", "8", "--device", "cpu", "-q", "--amp", "off", "--compile", "off"]
IDM = ["--method", "idm", "--ipc", "1", "--iterations", "1", "--batch-real", "8", "--net-queue", "3", "--device",
       "cpu", "-q", "--amp", "off", "--compile", "off"]
MTT_EXPERTS = ["--method", "mtt", "--ipc", "1", "--experts-only", "--num-experts", "3", "--train-epochs", "2",
               "--expert-epochs", "1", "--max-start-epoch", "1", "--device", "cpu", "--amp", "off", "--compile", "off"]
EVALUATE = ["hard.h5", "--real", "hard.h5", "--models", "4", "--epochs", "2", "--baselines", "random,full",
            "--device", "cpu", "-q", "--json", "-o", "report.json"]
DP_DM = ["--method", "dm", "--ipc", "2", "--iterations", "60", "--device", "cpu", "--dp-epsilon", "8", "--dp-unit",
         "image", "--dp-queries", "3", "--aug", "none", "--checkpoint-every", "2", "--amp", "off", "--compile", "off"]

Outcome = tuple[int, str, str]  # exit code, stdout, stderr
WAIT_S = 400  # the longest any one launch may take on the loaded machine
SCENARIOS_AT_ONCE = 4


def interrupt_after_checkpoint(run: subprocess.Popen, checkpoint: Path) -> Outcome:
    """SIGINT to the torchrun process group once ``checkpoint`` exists (mid-run); its exit code and output."""
    deadline = time.time() + WAIT_S
    while not checkpoint.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if not checkpoint.exists():
        if run.poll() is None:
            run.kill()
        code, _out, err = finish(run)
        raise AssertionError(f"no checkpoint {checkpoint.name} appeared (exit {code}): {err}")
    os.killpg(run.pid, signal.SIGINT)
    return finish(run, timeout=WAIT_S)


class Launches:
    """Every launch of test_torchrun.py: one folder per scenario, started when it is made.

    The plain DM run serves the 2-rank, the 1-rank and the interrupted-then-resumed comparisons
    (a checkpoint interval is not part of the run key).
    """

    def __init__(self, root: Path):
        self.root = root
        self.blob = root / "blob.h5"
        store.write(self.blob, make_blob_set(per_class=(8, 2, 4), size=8))
        self.hard = root / "hard.h5"
        store.write(self.hard, make_blob_set(noise=1.2, per_class=(6, 2, 6), size=8))
        self.started: list[subprocess.Popen] = []
        references = {  # the MTT build first: the 2-rank build waits for it
            "mtt_plain": ["distill", "blob.h5", *MTT_EXPERTS, "-q", "--json", "-o", "unused.h5"],
            "dm_plain": ["distill", str(self.blob), *DM, *EXACT, "-o", "reference.h5"],
            "dsa_plain": ["distill", str(self.blob), *DSA, "-o", "dsa.h5"],
            "idm_plain": ["distill", str(self.blob), *IDM, "-o", "idm.h5"],
            "eval_plain": ["evaluate", *EVALUATE],
        }
        scenarios: dict[str, Callable[[Path], object]] = {  # the longest chains first
            "dp": self._dp,
            "dm_sigint": self._dm_sigint,
            "mtt_two": self._mtt_two,
            "dm_two": self._dm_two,
            "eval_two": self._eval_two,
            "idm_two": lambda d: self._finish(torchrun("distill", self.blob, *IDM, "-o", "i2.h5", cwd=d,
                                                       rc_dir=d / "rc")),
            "dsa_two": lambda d: self._finish(torchrun("distill", self.blob, *DSA, "-o", "s2.h5", cwd=d)),
            "dm_one": lambda d: self._finish(torchrun("distill", self.blob, *DM, *EXACT, "-o", "one.h5", cwd=d, nproc=1)),
            "usage": lambda d: self._finish(torchrun("distill", self.blob, "--method", "mtt", "--ipc", "1",
                                                     "-o", "x.h5", cwd=d, rc_dir=d / "rc")),
        }
        self.folders = {name: root / name for name in [*references, *scenarios]}
        for folder in self.folders.values():
            folder.mkdir()
        shutil.copy(self.blob, self.folders["mtt_plain"] / "blob.h5")
        shutil.copy(self.hard, self.folders["eval_plain"] / "hard.h5")
        self._start_runner()
        for name, args in references.items():
            self.submit_plain(name, args, self.folders[name])
        # a few scenarios at a time keep both cores busy; thirty processes at once only thrash
        self._pool = ThreadPoolExecutor(max_workers=SCENARIOS_AT_ONCE)
        self.futures: dict[str, Future] = {name: self._pool.submit(run, self.folders[name])
                                           for name, run in scenarios.items()}

    def _start_runner(self) -> None:
        self._results = self.root / "plain_results"
        self._results.mkdir()
        self._runner_lock = threading.Lock()
        self._runner_log = open(self.root / "plain_runner.log", "w")
        self.runner = subprocess.Popen([sys.executable, str(HERE / "plain_runner.py"), str(self._results)],
                                       cwd=self.root, env=env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=self._runner_log, text=True)
        self.started.append(self.runner)

    def submit_plain(self, name: str, args: list[str], cwd: Path) -> None:
        """Queue ``medcondense ARGS`` (in ``cwd``) for the one-process runner."""
        with self._runner_lock:
            self.runner.stdin.write(json.dumps({"name": name, "cwd": str(cwd), "args": [str(a) for a in args]}) + "\n")
            self.runner.stdin.flush()

    def plain(self, name: str) -> Outcome:
        """A one-process reference run's exit code, stdout and stderr, once it has finished."""
        rc = self._results / f"{name}.rc"
        deadline = time.time() + WAIT_S
        while not rc.exists():
            if self.runner.poll() is not None and not rc.exists():
                log = (self.root / "plain_runner.log").read_text()
                raise AssertionError(f"the plain runner stopped (exit {self.runner.returncode}) before {name}: {log}")
            if time.time() > deadline:
                raise AssertionError(f"{name}: no result after {WAIT_S} s")
            time.sleep(0.05)
        return (int(rc.read_text()), (self._results / f"{name}.out").read_text(),
                (self._results / f"{name}.err").read_text())

    def succeeded(self, name: str) -> Outcome:
        """A one-process reference run's outcome; it must have succeeded."""
        code, out, err = self.plain(name)
        assert code == 0, launch_failed(name, err)
        return code, out, err

    def result(self, name: str):
        """What torchrun scenario ``name`` returned, once it has finished (its exception, if it raised)."""
        return self.futures[name].result(timeout=2 * WAIT_S)

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
        self._pool.shutdown(wait=True)
        with self._runner_lock:
            self.runner.stdin.close()  # the runner stops at the end of its input
        self.runner.wait(timeout=WAIT_S)
        self._runner_log.close()

    def _finish(self, proc: subprocess.Popen) -> Outcome:
        self.started.append(proc)
        return finish(proc, timeout=WAIT_S)

    def _dm_two(self, folder: Path) -> Outcome:
        (folder / "two").mkdir()
        return self._finish(torchrun("distill", self.blob, *DM, *EXACT, "-o", "two/out.h5", "--json", cwd=folder,
                                     rc_dir=folder / "rc2"))

    def _dm_sigint(self, folder: Path) -> dict:
        """SIGINT mid-run to a 2-rank DM run, then --resume in one process (the runner)."""
        import torch

        run = torchrun("distill", self.blob, *DM_CHECKPOINTED, "-o", "syn.h5", cwd=folder, rc_dir=folder / "rc",
                       new_session=True)
        self.started.append(run)
        checkpoint = folder / "syn.h5.ckpt"
        interrupted = interrupt_after_checkpoint(run, checkpoint)
        seen = {"checkpoint": checkpoint.exists(), "output": (folder / "syn.h5").exists(),
                "stopped_at": torch.load(checkpoint, weights_only=True)["iteration"]}
        self.submit_plain("dm_resume", ["distill", self.blob, *DM_CHECKPOINTED, "-o", "syn.h5", "--resume", "--json"],
                          folder)
        resumed = self.plain("dm_resume")
        return {"interrupted": interrupted, "seen": seen, "resumed": resumed}

    def _mtt_two(self, folder: Path) -> dict:
        """The 2-rank expert build, started as an interrupted build: expert 0's part is the plain
        build's expert 0, written where an interrupted build leaves it."""
        from medcondense.distill.experts import part_path, write_part

        code, out, err = self.plain("mtt_plain")
        if code != 0:
            raise AssertionError(f"the plain expert build failed: {err}")
        relative = Path(json.loads(out)["experts"]["path"])  # beside the input: blob.h5.experts/<key>.h5
        with h5py.File(self.folders["mtt_plain"] / relative, "r") as f:
            arrays = {name: np.asarray(f[name]) for name in ("trajectories", "train_loss", "train_accuracy")}
            attrs = {k: v for k, v in f.attrs.items() if k != "provenance"}
        (folder / "two").mkdir()
        shutil.copy(self.blob, folder / "two" / "blob.h5")
        target = folder / "two" / relative
        write_part(part_path(target, 0), json.loads(attrs["key"]), arrays["trajectories"][0], arrays["train_loss"][0],
                   arrays["train_accuracy"][0])
        two = self._finish(torchrun("distill", "blob.h5", *MTT_EXPERTS, "--json", "-o", "unused.h5",
                                    cwd=folder / "two", rc_dir=folder / "rc"))
        return {"single": (arrays, attrs), "target": target, "two": two}

    def _eval_two(self, folder: Path) -> Outcome:
        shutil.copy(self.hard, folder / "hard.h5")
        return self._finish(torchrun("evaluate", *EVALUATE, cwd=folder, rc_dir=folder / "rc"))

    def _dp(self, folder: Path) -> dict:
        """SIGINT mid-run to a 2-rank DP-DM run, then --resume in one process (the runner)."""
        import torch

        from medcondense.distill import dp
        from medcondense.distill.dpdm import release_digest

        run = torchrun("distill", self.blob, *DP_DM, "-o", "dp.h5", cwd=folder, rc_dir=folder / "rc", new_session=True)
        self.started.append(run)
        checkpoint = folder / "dp.h5.ckpt"
        interrupted = interrupt_after_checkpoint(run, checkpoint)
        payload = torch.load(checkpoint, weights_only=True)
        released = release_digest(dp.Statistics.from_state(payload["method_state"]["dp_release"], torch.device("cpu")))
        self.submit_plain("dp_resume", ["distill", self.blob, *DP_DM, "-o", "dp.h5", "--resume", "--json"], folder)
        resumed = self.plain("dp_resume")
        return {"interrupted": interrupted, "iteration": payload["iteration"], "released": released,
                "resumed": resumed}
