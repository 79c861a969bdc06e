"""distill and evaluate under real torchrun processes (gloo, 2 ranks) against one process.

The launches start with the package's first test (torchrun_launches.py, the ``launches``
fixture in conftest.py), a few scenarios at a time, so the 2-core machine is never idle between
tests; each test waits for its scenario and asserts. Both sides of every comparison run with
OMP_NUM_THREADS=1 (dist_helpers.env).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from medcondense import store

from dist_helpers import launch_failed, leftovers, one_json, rank_codes
from torchrun_launches import Launches


def _images(path: Path) -> np.ndarray:
    return store.read(path).images


def test_dm_two_ranks_equal_one_process_and_one_rank_equals_plain(launches: Launches):
    """Acceptance 1, 3 and 5: torch.equal with classes one at a time; one output, one JSON
    document, nothing left; every rank exits 0; one rank under torchrun makes the same file."""
    done = {name: launches.result(name) for name in ("dm_two", "dm_one")}
    for name, (code, _out, err) in done.items():
        assert code == 0, launch_failed(name, err)
    folder = launches.folders["dm_two"]
    assert rank_codes(folder / "rc2") == [0, 0]
    launches.succeeded("dm_plain")
    a = store.read(launches.folders["dm_plain"] / "reference.h5")
    b, c = store.read(folder / "two/out.h5"), store.read(launches.folders["dm_one"] / "one.h5")
    assert np.array_equal(a.images, b.images)  # bit for bit
    assert np.array_equal(a.images, c.images)
    assert a.attrs["run_key"] == b.attrs["run_key"] == c.attrs["run_key"]  # world size is not in it
    assert b.attrs["provenance"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "distributed" not in c.attrs["provenance"]
    np.testing.assert_allclose(np.array(a.attrs["loss_curve"]), np.array(b.attrs["loss_curve"]), rtol=1e-5)
    summary = one_json(done["dm_two"][1])
    assert summary["output"] == "two/out.h5" and summary["world_size"] == 2
    assert sorted(p.name for p in (folder / "two").iterdir()) == ["out.h5"]
    assert leftovers(folder) == [] and leftovers(launches.folders["dm_one"]) == []
    assert "Traceback" not in done["dm_two"][2]


def test_dsa_two_ranks_equal_one_process(launches: Launches):
    """Acceptance 1 for DSA (a few iterations): the synthetic set is combined after each image
    step and every rank repeats the inner loop, and the result is bit for bit one process's.
    (Batched classes and bf16 are compared in test_distributed_unit.py, in one process.)"""
    code, _out, err = launches.result("dsa_two")
    assert code == 0, launch_failed("dsa_two", err)
    launches.succeeded("dsa_plain")
    assert np.array_equal(_images(launches.folders["dsa_plain"] / "dsa.h5"),
                          _images(launches.folders["dsa_two"] / "s2.h5"))


def test_evaluate_two_ranks_reports_what_one_process_reports(launches: Launches):
    """Acceptance 2: --models 4 on 2 ranks = one process, on a set far from 100 % accuracy."""
    code, out2, err = launches.result("eval_two")
    assert code == 0, launch_failed("eval_two", err)
    folder = launches.folders["eval_two"]
    assert rank_codes(folder / "rc") == [0, 0]
    launches.succeeded("eval_plain")
    r1 = json.loads((launches.folders["eval_plain"] / "report.json").read_text())
    r2 = json.loads((folder / "report.json").read_text())
    assert r1["results"] == r2["results"]
    assert r1["run_key"] == r2["run_key"]
    accuracy = r1["results"][0]["metrics"]["accuracy"]["mean"]
    assert accuracy < 0.9, accuracy  # far from trivially 100 %
    assert one_json(out2)["run_key"] == r2["run_key"]  # one document on stdout
    assert r2["provenance"]["distributed"]["world_size"] == 2
    cache = json.loads((folder / "hard.h5.baselines.json").read_text())
    assert len(cache["entries"]) == 2  # rank 0 wrote the full and the random baseline once
    assert leftovers(folder) == []


def test_usage_errors_exit_2_on_every_rank_as_the_mtt_loop_does(launches: Launches):
    """Acceptance 3 with the usage error #9 allows: the MTT loop refuses several ranks with exit 2
    and the reason on every rank, before any rank waits for another; nothing is written."""
    code, out, err = launches.result("usage")
    folder = launches.folders["usage"]
    assert code != 0
    assert rank_codes(folder / "rc") == [2, 2]
    assert "cannot be split over 2 processes: one expert trajectory couples all classes" in err
    assert "--experts-only" in err and out == ""
    assert not (folder / "x.h5").exists() and not list(folder.glob("*.experts"))


def test_idm_two_ranks_equal_one_process(launches: Launches):
    """#14 with #17: every rank trains the same network queue from the same seed and matches its
    own classes; the factorised images are bit for bit one process's."""
    code, _out, err = launches.result("idm_two")
    assert code == 0, launch_failed("idm_two", err)
    assert rank_codes(launches.folders["idm_two"] / "rc") == [0, 0]
    launches.succeeded("idm_plain")
    one, two = store.read(launches.folders["idm_plain"] / "idm.h5"), store.read(launches.folders["idm_two"] / "i2.h5")
    assert np.array_equal(one.images, two.images)
    # the loss is summed over the ranks in float64: another order of the same float32 terms
    np.testing.assert_allclose(np.array(one.attrs["loss_curve"]), np.array(two.attrs["loss_curve"]), rtol=1e-6)


def test_mtt_experts_round_robin_over_two_ranks_equal_one_process(launches: Launches):
    """#9 under torchrun: --experts-only trains the experts round-robin over the ranks, rank 0
    gathers and writes; an interrupted build resumes expert by expert; the file holds what one
    process builds (each expert seeded by its index, not by the rank)."""
    from medcondense.distill.experts import part_path

    launches.succeeded("mtt_plain")
    built = launches.result("mtt_two")
    (arrays, attrs), target = built["single"], built["target"]
    code, out, err = built["two"]
    assert code == 0, launch_failed("mtt_two", err)
    assert rank_codes(launches.folders["mtt_two"] / "rc") == [0, 0]
    assert one_json(out)["experts"]["built"] is True
    # the 2-rank build found expert 0 finished (an interrupted build) and trained 1 and 2, one per rank
    assert "resumed the expert build: 1 of 3" in err and "round-robin over 2 processes" in err
    assert "expert 2/3" in err and "expert 3/3" in err and "expert 1/3" not in err  # rank 0 logs what it wrote
    with h5py.File(target, "r") as f:
        for name, values in arrays.items():
            assert np.array_equal(np.asarray(f[name]), values), name
        assert {k: v for k, v in f.attrs.items() if k != "provenance"} == attrs
    assert not part_path(target, 0).parent.exists()  # the parts are gone once the file is whole
    assert not (launches.folders["mtt_two"] / "two" / "unused.h5").exists()


def test_dp_dm_releases_once_on_rank_0_and_a_resume_on_one_rank_reuses_it(launches: Launches):
    """DP-DM under torchrun: rank 0 alone releases the noisy statistics and broadcasts them (the
    ranks compare the release's digest, or stop); SIGINT mid-run keeps the release in the
    checkpoint, and --resume as one process (another world size) matches against that release,
    releasing nothing new; the output is a valid DP file."""
    run = launches.result("dp")
    folder = launches.folders["dp"]
    _code, _out, err = run["interrupted"]
    assert rank_codes(folder / "rc") == [130, 130], err
    released = run["released"]
    assert err.count("released the DP statistics") == 1  # once, on rank 0
    assert f"released the DP statistics (once on rank 0): {released}" in err
    code, out, err = run["resumed"]
    assert code == 0, err
    summary = json.loads(out)
    assert summary["resumed_from"] == run["iteration"] and summary["dp_release"] == released
    assert "released the DP statistics" not in err
    assert f"reusing the DP release of the checkpoint: {released}" in err
    written = store.read(folder / "dp.h5")
    assert written.attrs["dp"]["epsilon"] == 8.0 and written.attrs["dp"]["noise_multiplier"] > 0
    assert "run_key" not in written.attrs and np.isfinite(written.images).all()
    assert leftovers(folder) == []


def test_sigint_stops_every_rank_then_resume_in_one_process_equals_uninterrupted(launches: Launches):
    """Acceptance 4: SIGINT to the process group mid-run: every worker exits 130 at the same
    iteration, a checkpoint exists; --resume in one process then equals an uninterrupted run."""
    run = launches.result("dm_sigint")
    folder = launches.folders["dm_sigint"]
    code, _out, err = run["interrupted"]
    assert code == 1, err  # torchrun itself exits 1 on SIGINT, whatever its workers did (docs/distributed.md)
    assert rank_codes(folder / "rc") == [130, 130], err
    assert run["seen"]["checkpoint"] and not run["seen"]["output"]
    stopped_at = run["seen"]["stopped_at"]
    assert 0 < stopped_at < 21
    code, out, err = run["resumed"]
    assert code == 0, err
    assert json.loads(out)["resumed_from"] == stopped_at
    launches.succeeded("dm_plain")
    assert np.array_equal(_images(folder / "syn.h5"), _images(launches.folders["dm_plain"] / "reference.h5"))
    assert leftovers(folder) == []
