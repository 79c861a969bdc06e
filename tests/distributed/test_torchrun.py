"""distill and evaluate under real torchrun processes (gloo, 2 ranks) against one process.

Each test starts its launches side by side (the machine is small) and compares the outputs.
Both sides run with OMP_NUM_THREADS=1 (dist_helpers.env).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from medcondense import store

from blob_data import make_blob_set
from dist_helpers import finish, leftovers, one_json, plain, rank_codes, torchrun

# 4 classes, 8 px, few images: an iteration takes milliseconds, start-up dominates
DM = ["--method", "dm", "--ipc", "2", "--iterations", "30", "--batch-real", "8", "--device", "cpu", "-q"]
EXACT = ["--amp", "off", "--compile", "off", "--batch-classes", "off"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """A folder with the tiny real set and, started at once, the plain DM run every DM
    comparison uses (a checkpoint interval is not part of the run key, so one plain run serves
    the 2-rank, the 1-rank and the interrupted-then-resumed runs)."""
    folder = tmp_path_factory.mktemp("torchrun")
    store.write(folder / "blob.h5", make_blob_set(per_class=(8, 2, 4), size=8))
    reference = plain("distill", folder / "blob.h5", *DM, *EXACT, "-o", "reference.h5", cwd=folder)
    yield folder
    if reference.poll() is None:
        reference.kill()
    reference.communicate()


def _reference(shared: Path) -> Path:
    """The plain run's output, once it is there."""
    path = shared / "reference.h5"
    deadline = time.time() + 300
    while not path.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # published by rename: complete once visible
    return path


@pytest.fixture
def blob(shared: Path) -> Path:
    return shared / "blob.h5"


def _images(path: Path) -> np.ndarray:
    return store.read(path).images


def test_dm_two_ranks_equal_one_process_and_one_rank_equals_plain(tmp_path: Path, blob: Path, shared: Path):
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


def test_dsa_two_ranks_equal_one_process(tmp_path: Path, blob: Path):
    """Acceptance 1 for DSA (a few iterations): the synthetic set is combined after each image
    step and every rank repeats the inner loop, and the result is bit for bit one process's.
    (Batched classes and bf16 are compared in test_distributed_unit.py, in one process.)"""
    dsa = ["--method", "dsa", "--ipc", "2", "--iterations", "2", "--outer-loop", "2", "--inner-loop", "1",
           "--batch-real", "8", "--device", "cpu", "-q", "--amp", "off", "--compile", "off"]
    procs = [plain("distill", blob, *dsa, "-o", "s1.h5", cwd=tmp_path), torchrun("distill", blob, *dsa, "-o", "s2.h5", cwd=tmp_path)]
    for proc in procs:
        code, _out, err = finish(proc)
        assert code == 0, err
    assert np.array_equal(_images(tmp_path / "s1.h5"), _images(tmp_path / "s2.h5"))


def test_evaluate_two_ranks_reports_what_one_process_reports(tmp_path: Path):
    """Acceptance 2: --models 4 on 2 ranks = one process, on a set far from 100 % accuracy."""
    for side in ("one", "two"):
        (tmp_path / side).mkdir()
        store.write(tmp_path / side / "hard.h5", make_blob_set(noise=1.2, per_class=(6, 2, 6), size=8))
    args = ["hard.h5", "--real", "hard.h5", "--models", "4", "--epochs", "2", "--baselines", "random,full",
            "--device", "cpu", "-q", "--json", "-o", "report.json"]
    one = plain("evaluate", *args, cwd=tmp_path / "one")
    two = torchrun("evaluate", *args, cwd=tmp_path / "two", rc_dir=tmp_path / "rc")
    (c1, out1, e1), (c2, out2, e2) = finish(one), finish(two)
    assert c1 == 0 and c2 == 0, (e1, e2)
    assert rank_codes(tmp_path / "rc") == [0, 0]
    r1 = json.loads((tmp_path / "one" / "report.json").read_text())
    r2 = json.loads((tmp_path / "two" / "report.json").read_text())
    assert r1["results"] == r2["results"]
    assert r1["run_key"] == r2["run_key"]
    accuracy = r1["results"][0]["metrics"]["accuracy"]["mean"]
    assert 0.3 < accuracy < 0.9 or accuracy < 0.6, accuracy  # far from trivially 100 %
    assert accuracy < 0.95
    assert one_json(out2)["run_key"] == r2["run_key"]  # one document on stdout
    assert r2["provenance"]["distributed"]["world_size"] == 2
    cache = json.loads((tmp_path / "two" / "hard.h5.baselines.json").read_text())
    assert len(cache["entries"]) == 2  # rank 0 wrote the full and the random baseline once
    assert leftovers(tmp_path) == []


def test_usage_errors_exit_2_on_every_rank(tmp_path: Path, blob: Path):
    """Acceptance 3: a usage error is exit 2 on every rank, before any rank waits for another."""
    bad = torchrun("distill", blob, "--method", "dm", "--ipc", "0", "-o", "x.h5", cwd=tmp_path, rc_dir=tmp_path / "rc")
    code, out, err = finish(bad)
    assert code != 0
    assert rank_codes(tmp_path / "rc") == [2, 2]
    assert "--ipc 0" in err and out == ""
    assert not (tmp_path / "x.h5").exists()


def test_sigint_stops_every_rank_then_resume_in_one_process_equals_uninterrupted(tmp_path: Path, blob: Path, shared: Path):
    """Acceptance 4: SIGINT to the process group mid-run: every worker exits 130 at the same
    iteration, a checkpoint exists; --resume in one process then equals an uninterrupted run."""
    args = [*DM, *EXACT, "--checkpoint-every", "2"]
    run = torchrun("distill", blob, *args, "-o", "syn.h5", cwd=tmp_path, rc_dir=tmp_path / "rc", new_session=True)
    checkpoint = tmp_path / "syn.h5.ckpt"
    deadline = time.time() + 180
    while not checkpoint.exists() and run.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), run.communicate()[1]
    os.killpg(run.pid, signal.SIGINT)
    code, _out, err = finish(run)
    assert code == 1, err  # torchrun itself exits 1 on SIGINT, whatever its workers did (docs/distributed.md)
    assert rank_codes(tmp_path / "rc") == [130, 130], err
    assert checkpoint.exists() and not (tmp_path / "syn.h5").exists()
    import torch

    stopped_at = torch.load(checkpoint, weights_only=True)["iteration"]
    assert 0 < stopped_at < 31
    code, out, err = finish(plain("distill", blob, *args, "-o", "syn.h5", "--resume", "--json", cwd=tmp_path))
    assert code == 0, err
    assert json.loads(out)["resumed_from"] == stopped_at
    assert np.array_equal(_images(tmp_path / "syn.h5"), _images(_reference(shared)))
    assert leftovers(tmp_path) == []
