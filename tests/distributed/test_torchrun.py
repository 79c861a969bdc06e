"""distill and evaluate under real torchrun processes (gloo, 2 ranks) against one process.

Each test starts its launches side by side (the machine is small) and compares the outputs.
Both sides run with OMP_NUM_THREADS=1 (dist_helpers.env).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from medcondense import store

from blob_data import make_blob_set
from dist_helpers import finish, leftovers, one_json, plain, rank_codes, torchrun

# 4 classes, 8 px, few images: an iteration takes milliseconds, start-up dominates
DM = ["--method", "dm", "--ipc", "2", "--iterations", "20", "--batch-real", "8", "--device", "cpu", "-q"]
EXACT = ["--amp", "off", "--compile", "off", "--batch-classes", "off"]


DSA = ["--method", "dsa", "--ipc", "2", "--iterations", "2", "--outer-loop", "2", "--inner-loop", "1",
       "--batch-real", "8", "--device", "cpu", "-q", "--amp", "off", "--compile", "off"]
IDM = ["--method", "idm", "--ipc", "1", "--iterations", "1", "--batch-real", "8", "--net-queue", "3", "--device",
       "cpu", "-q", "--amp", "off", "--compile", "off"]
MTT_EXPERTS = ["--method", "mtt", "--ipc", "1", "--experts-only", "--num-experts", "3", "--train-epochs", "2",
               "--expert-epochs", "1", "--max-start-epoch", "1", "--device", "cpu", "--amp", "off", "--compile", "off"]
EVALUATE = ["hard.h5", "--real", "hard.h5", "--models", "4", "--epochs", "2", "--baselines", "random,full",
            "--device", "cpu", "-q", "--json", "-o", "report.json"]


class Shared:
    """The module's folder (the tiny real set) and the plain one-process runs every comparison
    needs, all started at once when the module starts, so they overlap the torchrun launches
    (one plain DM run serves the 2-rank, the 1-rank and the interrupted-then-resumed runs: a
    checkpoint interval is not part of the run key)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.blob = folder / "blob.h5"
        store.write(self.blob, make_blob_set(per_class=(8, 2, 4), size=8))
        (folder / "mtt").mkdir()
        shutil.copy(self.blob, folder / "mtt" / "blob.h5")
        (folder / "eval").mkdir()
        store.write(folder / "eval" / "hard.h5", make_blob_set(noise=1.2, per_class=(6, 2, 6), size=8))
        self.started = {
            "dm": plain("distill", self.blob, *DM, *EXACT, "-o", "reference.h5", cwd=folder),
            "dsa": plain("distill", self.blob, *DSA, "-o", "dsa.h5", cwd=folder),
            "idm": plain("distill", self.blob, *IDM, "-o", "idm.h5", cwd=folder),
            "mtt": plain("distill", "blob.h5", *MTT_EXPERTS, "-q", "--json", "-o", "unused.h5", cwd=folder / "mtt"),
            "evaluate": plain("evaluate", *EVALUATE, cwd=folder / "eval"),
        }
        self.done: dict[str, tuple[int, str, str]] = {}

    def result(self, name: str) -> tuple[int, str, str]:
        """The plain run's exit code, stdout and stderr, once it has finished (it must succeed)."""
        if name not in self.done:
            self.done[name] = finish(self.started[name], timeout=400)
        code, _out, err = self.done[name]
        assert code == 0, (name, err)
        return self.done[name]

    def close(self) -> None:
        for proc in self.started.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    runs = Shared(tmp_path_factory.mktemp("torchrun"))
    yield runs
    runs.close()


def _reference(shared: Shared) -> Path:
    """The plain DM run's output."""
    shared.result("dm")
    return shared.folder / "reference.h5"


@pytest.fixture
def blob(shared: Shared) -> Path:
    return shared.blob


def interrupt_after_checkpoint(run, checkpoint: Path) -> tuple[int, str, str]:
    """SIGINT to the torchrun process group once ``checkpoint`` exists (mid-run); its exit code and output."""
    deadline = time.time() + 180
    while not checkpoint.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), run.communicate()[1]
    os.killpg(run.pid, signal.SIGINT)
    return finish(run)


def _images(path: Path) -> np.ndarray:
    return store.read(path).images


def test_dm_two_ranks_equal_one_process_and_one_rank_equals_plain(tmp_path: Path, blob: Path, shared: Shared):
    """Acceptance 1, 3 and 5: torch.equal with classes one at a time; one output, one JSON
    document, nothing left; every rank exits 0; one rank under torchrun makes the same file."""
    (tmp_path / "two").mkdir()
    procs = {
        "two": torchrun("distill", blob, *DM, *EXACT, "-o", "two/out.h5", "--json", cwd=tmp_path, rc_dir=tmp_path / "rc2"),
        "one": torchrun("distill", blob, *DM, *EXACT, "-o", "one.h5", cwd=tmp_path, nproc=1),
    }
    done = {name: finish(proc) for name, proc in procs.items()}
    for name, (code, _out, err) in done.items():
        assert code == 0, (name, err)
    assert rank_codes(tmp_path / "rc2") == [0, 0]
    a = store.read(_reference(shared))
    b, c = (store.read(tmp_path / p) for p in ("two/out.h5", "one.h5"))
    assert np.array_equal(a.images, b.images)  # bit for bit
    assert np.array_equal(a.images, c.images)
    assert a.attrs["run_key"] == b.attrs["run_key"] == c.attrs["run_key"]  # world size is not in it
    assert b.attrs["provenance"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "distributed" not in c.attrs["provenance"]
    np.testing.assert_allclose(np.array(a.attrs["loss_curve"]), np.array(b.attrs["loss_curve"]), rtol=1e-5)
    summary = one_json(done["two"][1])
    assert summary["output"] == "two/out.h5" and summary["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["out.h5"]
    assert leftovers(tmp_path) == []
    assert "Traceback" not in done["two"][2]


def test_dsa_two_ranks_equal_one_process(tmp_path: Path, blob: Path, shared: Shared):
    """Acceptance 1 for DSA (a few iterations): the synthetic set is combined after each image
    step and every rank repeats the inner loop, and the result is bit for bit one process's.
    (Batched classes and bf16 are compared in test_distributed_unit.py, in one process.)"""
    code, _out, err = finish(torchrun("distill", blob, *DSA, "-o", "s2.h5", cwd=tmp_path))
    assert code == 0, err
    shared.result("dsa")
    assert np.array_equal(_images(shared.folder / "dsa.h5"), _images(tmp_path / "s2.h5"))


def test_evaluate_two_ranks_reports_what_one_process_reports(tmp_path: Path, shared: Shared):
    """Acceptance 2: --models 4 on 2 ranks = one process, on a set far from 100 % accuracy."""
    store.write(tmp_path / "hard.h5", make_blob_set(noise=1.2, per_class=(6, 2, 6), size=8))
    code, out2, err = finish(torchrun("evaluate", *EVALUATE, cwd=tmp_path, rc_dir=tmp_path / "rc"))
    assert code == 0, err
    assert rank_codes(tmp_path / "rc") == [0, 0]
    shared.result("evaluate")
    r1 = json.loads((shared.folder / "eval" / "report.json").read_text())
    r2 = json.loads((tmp_path / "report.json").read_text())
    assert r1["results"] == r2["results"]
    assert r1["run_key"] == r2["run_key"]
    accuracy = r1["results"][0]["metrics"]["accuracy"]["mean"]
    assert accuracy < 0.9, accuracy  # far from trivially 100 %
    assert one_json(out2)["run_key"] == r2["run_key"]  # one document on stdout
    assert r2["provenance"]["distributed"]["world_size"] == 2
    cache = json.loads((tmp_path / "hard.h5.baselines.json").read_text())
    assert len(cache["entries"]) == 2  # rank 0 wrote the full and the random baseline once
    assert leftovers(tmp_path) == []


def test_usage_errors_exit_2_on_every_rank_as_the_mtt_loop_does(tmp_path: Path, blob: Path):
    """Acceptance 3 with the usage error #9 allows: the MTT loop refuses several ranks with exit 2
    and the reason on every rank, before any rank waits for another; nothing is written."""
    bad = torchrun("distill", blob, "--method", "mtt", "--ipc", "1", "-o", "x.h5", cwd=tmp_path, rc_dir=tmp_path / "rc")
    code, out, err = finish(bad)
    assert code != 0
    assert rank_codes(tmp_path / "rc") == [2, 2]
    assert "cannot be split over 2 processes: one expert trajectory couples all classes" in err
    assert "--experts-only" in err and out == ""
    assert not (tmp_path / "x.h5").exists() and not list(tmp_path.glob("*.experts"))


def test_idm_two_ranks_equal_one_process(tmp_path: Path, blob: Path, shared: Shared):
    """#14 with #17: every rank trains the same network queue from the same seed and matches its
    own classes; the factorised images are bit for bit one process's."""
    code, _out, err = finish(torchrun("distill", blob, *IDM, "-o", "i2.h5", cwd=tmp_path, rc_dir=tmp_path / "rc"))
    assert code == 0, err
    assert rank_codes(tmp_path / "rc") == [0, 0]
    shared.result("idm")
    one, two = store.read(shared.folder / "idm.h5"), store.read(tmp_path / "i2.h5")
    assert np.array_equal(one.images, two.images)
    # the loss is summed over the ranks in float64: another order of the same float32 terms
    np.testing.assert_allclose(np.array(one.attrs["loss_curve"]), np.array(two.attrs["loss_curve"]), rtol=1e-6)


def test_mtt_experts_round_robin_over_two_ranks_equal_one_process(tmp_path: Path, blob: Path, shared: Shared):
    """#9 under torchrun: --experts-only trains the experts round-robin over the ranks, rank 0
    gathers and writes; an interrupted build resumes expert by expert; the file holds what one
    process builds (each expert seeded by its index, not by the rank)."""
    from medcondense.distill.experts import part_path, write_part

    (tmp_path / "two").mkdir()
    shutil.copy(blob, tmp_path / "two" / "blob.h5")
    _code, out, _err = shared.result("mtt")
    relative = Path(json.loads(out)["experts"]["path"])  # beside the input: blob.h5.experts/<key>.h5
    single = shared.folder / "mtt" / relative
    with h5py.File(single, "r") as f:
        arrays = {name: np.asarray(f[name]) for name in ("trajectories", "train_loss", "train_accuracy")}
        attrs = {k: v for k, v in f.attrs.items() if k != "provenance"}
    # the 2-rank build finds expert 0 finished (an interrupted build) and trains 1 and 2, one per rank
    target = tmp_path / "two" / relative
    write_part(part_path(target, 0), json.loads(attrs["key"]), arrays["trajectories"][0], arrays["train_loss"][0],
               arrays["train_accuracy"][0])
    two = torchrun("distill", "blob.h5", *MTT_EXPERTS, "--json", "-o", "unused.h5", cwd=tmp_path / "two",
                   rc_dir=tmp_path / "rc")
    code, out, err = finish(two)
    assert code == 0, err
    assert rank_codes(tmp_path / "rc") == [0, 0]
    assert one_json(out)["experts"]["built"] is True
    assert "resumed the expert build: 1 of 3" in err and "round-robin over 2 processes" in err
    assert "expert 2/3" in err and "expert 3/3" in err and "expert 1/3" not in err  # rank 0 logs what it wrote
    with h5py.File(target, "r") as f:
        for name, values in arrays.items():
            assert np.array_equal(np.asarray(f[name]), values), name
        assert {k: v for k, v in f.attrs.items() if k != "provenance"} == attrs
    assert not part_path(target, 0).parent.exists()  # the parts are gone once the file is whole
    assert not (tmp_path / "two" / "unused.h5").exists()


DP_DM = ["--method", "dm", "--ipc", "2", "--iterations", "60", "--device", "cpu", "--dp-epsilon", "8", "--dp-unit",
         "image", "--dp-queries", "3", "--aug", "none", "--checkpoint-every", "2", "--amp", "off", "--compile", "off"]


def test_dp_dm_releases_once_on_rank_0_and_a_resume_on_one_rank_reuses_it(tmp_path: Path, blob: Path):
    """DP-DM under torchrun: rank 0 alone releases the noisy statistics and broadcasts them (the
    ranks compare the release's digest, or stop); SIGINT mid-run keeps the release in the
    checkpoint, and --resume as one process (another world size) matches against that release,
    releasing nothing new; the output is a valid DP file."""
    import torch

    from medcondense.distill import dp
    from medcondense.distill.dpdm import release_digest

    run = torchrun("distill", blob, *DP_DM, "-o", "dp.h5", cwd=tmp_path, rc_dir=tmp_path / "rc", new_session=True)
    checkpoint = tmp_path / "dp.h5.ckpt"
    code, _out, err = interrupt_after_checkpoint(run, checkpoint)
    assert rank_codes(tmp_path / "rc") == [130, 130], err
    payload = torch.load(checkpoint, weights_only=True)
    released = release_digest(dp.Statistics.from_state(payload["method_state"]["dp_release"], torch.device("cpu")))
    assert err.count("released the DP statistics") == 1  # once, on rank 0
    assert f"released the DP statistics (once on rank 0): {released}" in err
    code, out, err = finish(plain("distill", blob, *DP_DM, "-o", "dp.h5", "--resume", "--json", cwd=tmp_path))
    assert code == 0, err
    summary = json.loads(out)
    assert summary["resumed_from"] == payload["iteration"] and summary["dp_release"] == released
    assert "released the DP statistics" not in err
    assert f"reusing the DP release of the checkpoint: {released}" in err
    written = store.read(tmp_path / "dp.h5")
    assert written.attrs["dp"]["epsilon"] == 8.0 and written.attrs["dp"]["noise_multiplier"] > 0
    assert "run_key" not in written.attrs and np.isfinite(written.images).all()
    assert leftovers(tmp_path) == []


def test_sigint_stops_every_rank_then_resume_in_one_process_equals_uninterrupted(tmp_path: Path, blob: Path, shared: Shared):
    """Acceptance 4: SIGINT to the process group mid-run: every worker exits 130 at the same
    iteration, a checkpoint exists; --resume in one process then equals an uninterrupted run."""
    args = [*DM, *EXACT, "--checkpoint-every", "2"]
    run = torchrun("distill", blob, *args, "-o", "syn.h5", cwd=tmp_path, rc_dir=tmp_path / "rc", new_session=True)
    checkpoint = tmp_path / "syn.h5.ckpt"
    code, _out, err = interrupt_after_checkpoint(run, checkpoint)
    assert code == 1, err  # torchrun itself exits 1 on SIGINT, whatever its workers did (docs/distributed.md)
    assert rank_codes(tmp_path / "rc") == [130, 130], err
    assert checkpoint.exists() and not (tmp_path / "syn.h5").exists()
    import torch

    stopped_at = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 0 < stopped_at < 21
    code, out, err = finish(plain("distill", blob, *args, "-o", "syn.h5", "--resume", "--json", cwd=tmp_path))
    assert code == 0, err
    assert json.loads(out)["resumed_from"] == stopped_at
    assert np.array_equal(_images(tmp_path / "syn.h5"), _images(_reference(shared)))
    assert leftovers(tmp_path) == []
