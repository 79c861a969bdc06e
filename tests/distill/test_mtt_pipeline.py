"""`distill --method mtt` end to end: experts cache, output record, resume, errors, evaluate's lr."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from distill_helpers import write_blob
from medcondense import store
from medcondense.config import DistillConfig
from medcondense.distill import pipeline
from medcondense.distill.base import EngineHooks
from medcondense.errors import ConfigError, Interrupted, RuntimeFailure

# Tiny: 2 experts x 2 epochs on the 96 train images of an 8 px blob set, 2 student steps.
TINY = dict(method="mtt", ipc=1, iterations=2, num_experts=2, train_epochs=2, syn_steps=2, expert_epochs=1,
            max_start_epoch=2, lr_img=100.0, device="cpu", checkpoint_every=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_blob(tmp_path_factory.mktemp("mtt") / "data.h5", size=8)


@pytest.fixture(scope="module")
def whole(data) -> tuple[Path, dict]:
    """One uninterrupted run (it also builds the experts the other tests reuse)."""
    out = data.parent / "whole.h5"
    return out, pipeline.run(_cfg(data, out))


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    """Another input (other content) with its experts built (--experts-only)."""
    path = write_blob(tmp_path_factory.mktemp("mtt-other") / "data.h5", size=8, seed=1)
    pipeline.run(_cfg(path, path.parent / "syn.h5", experts_only=True))
    return path


def _cfg(data: Path, output: Path, **overrides) -> DistillConfig:
    return DistillConfig(input=str(data), output=str(output), **{**TINY, **overrides})


def _experts_files(data: Path) -> list[Path]:
    return sorted((data.parent / (data.name + ".experts")).glob("*.h5"))


def test_mtt_writes_a_synthetic_set_with_learned_lr_and_reuses_experts(data, whole, tmp_path):
    path, result = whole
    syn = store.read(path)
    assert syn.kind == "synthetic" and syn.attrs["method"] == "mtt" and syn.n == 4
    learned = syn.attrs["learned_lr"]
    assert isinstance(learned, float) and learned > 0 and learned != 0.01, "the step size is learned"
    files = _experts_files(data)
    assert len(files) == 1 and syn.attrs["experts_key"].startswith(files[0].stem)
    hp = syn.attrs["hyperparameters"]
    assert hp["extra"]["syn_steps"] == 2 and hp["extra"]["unroll"] == "walk" and hp["lr_img"] == 100.0
    assert result["experts"]["built"] is True
    stamp = files[0].stat().st_mtime_ns
    # another IPC shares the experts: a cache hit, nothing retrained
    again = pipeline.run(_cfg(data, tmp_path / "b.h5", ipc=2, iterations=0))
    assert again["experts"]["built"] is False and files[0].stat().st_mtime_ns == stamp
    assert store.read(tmp_path / "b.h5").attrs["experts_key"] == syn.attrs["experts_key"]
    # a changed expert setting is a miss: a second file
    only = pipeline.run(_cfg(data, tmp_path / "c.h5", num_experts=1, experts_only=True))
    assert only["experts"]["built"] is True and not (tmp_path / "c.h5").exists()
    assert len(_experts_files(data)) == 2


def test_changed_content_misses_the_cache(data, whole, other):
    assert _experts_files(data)[0].name != _experts_files(other)[0].name


def test_interrupted_mtt_run_resumes_bit_for_bit(data, whole, tmp_path):
    whole, _ = whole

    def stop(it, loss):
        if it == 0:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.h5"
    with pytest.raises(Interrupted):
        pipeline.run(_cfg(data, out), hooks=EngineHooks(after_iteration=stop))
    resumed = pipeline.run(_cfg(data, out, resume=True))
    assert resumed["resumed_from"] == 1
    a, b = store.read(whole), store.read(out)
    assert np.array_equal(a.images, b.images)
    assert a.attrs["learned_lr"] == b.attrs["learned_lr"]
    assert a.attrs["loss_curve"] == b.attrs["loss_curve"]


def test_full_unroll_gives_the_same_images_as_the_walk(data, whole, tmp_path):
    walk = pipeline.run(_cfg(data, tmp_path / "walk.h5", iterations=0))
    full = pipeline.run(_cfg(data, tmp_path / "full.h5", iterations=0, unroll="full"))
    a, b = store.read(tmp_path / "walk.h5"), store.read(tmp_path / "full.h5")
    assert np.allclose(a.images, b.images, rtol=1e-4, atol=1e-4)
    assert a.attrs["learned_lr"] == pytest.approx(b.attrs["learned_lr"], rel=1e-5)
    assert walk["final_loss"] == pytest.approx(full["final_loss"], rel=1e-4)


def test_a_step_size_that_turns_negative_stops_the_run(data, tmp_path):
    from medcondense.distill.mtt import MTTMethod

    hp = MTTMethod.resolve(_cfg(data, tmp_path / "x.h5"), torch.device("cpu"), True)
    from medcondense.distill.base import DataSpec

    method = MTTMethod(hp, DataSpec(1, 8, 4), torch.device("cpu"))
    method.init_state(torch.zeros(4, 1, 8, 8), torch.Generator())
    method.syn_lr.grad = torch.tensor(1e9)  # one huge step of the step size's SGD
    with pytest.raises(RuntimeFailure, match="step size became -"):
        method.after_step(None)


def test_runaway_step_size_ends_with_exit_1_and_keeps_the_checkpoint(data, whole, tmp_path):
    out = tmp_path / "bad.h5"
    with pytest.raises(RuntimeFailure) as failure:
        pipeline.run(_cfg(data, out, lr_lr=1e9, iterations=2))
    assert failure.value.exit_code == 1
    assert not out.exists()
    assert Path(str(out) + ".ckpt").exists()


@pytest.mark.parametrize("overrides,message", [
    (dict(max_start_epoch=3, expert_epochs=2, train_epochs=3), "--max-start-epoch 3 \\+ --expert-epochs 2"),
    (dict(method="dm", preset="medmnist"), "medmnist"),
    (dict(unroll="sideways"), "--unroll"),
    (dict(method="dsa", syn_steps=3), "--syn-steps"),
])
def test_bad_mtt_options_are_config_errors(data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        pipeline.run(_cfg(data, tmp_path / "x.h5", **overrides))


def test_given_experts_file_must_match_the_input(data, other, tmp_path):
    foreign = _experts_files(other)[0]
    with pytest.raises(ConfigError, match="another input"):
        pipeline.run(_cfg(data, tmp_path / "x.h5", experts=str(foreign)))


def test_medmnist_preset_resolves_the_seed_study_values(data, tmp_path):
    from medcondense.distill.mtt import MTTMethod

    cfg = dataclasses.replace(_cfg(data, tmp_path / "x.h5"), preset="medmnist", syn_steps=None, expert_epochs=None,
                              max_start_epoch=None, num_experts=None, train_epochs=None, lr_img=None, iterations=None)
    hp = MTTMethod.resolve(cfg, torch.device("cpu"), True)
    assert (hp.extra["syn_steps"], hp.extra["expert_epochs"], hp.extra["max_start_epoch"]) == (20, 3, 20)
    assert hp.lr_img == 1000.0 and hp.extra["lr_lr"] == 1e-6 and hp.extra["lr_teacher"] == 0.01
    assert (hp.extra["num_experts"], hp.extra["train_epochs"], hp.iterations) == (100, 50, 5000)


def test_compiled_experts_match_eager_ones_and_share_their_key(data, tmp_path):
    """--compile applies to the experts' training; the numbers agree within float rounding, so
    compile is not part of the experts' key (docs/distill.md, "Speed switches")."""
    import shutil

    import h5py

    from medcondense.distill.experts import read_experts_attrs

    built = {}
    for mode in ("off", "on"):
        copy = tmp_path / mode / "data.h5"
        copy.parent.mkdir()
        shutil.copy(data, copy)  # same content, own cache folder
        result = pipeline.run(_cfg(copy, copy.parent / "syn.h5", experts_only=True, compile=mode, amp="off", num_experts=1))
        assert result["experts"]["built"] is True
        (path,) = _experts_files(copy)
        built[mode] = path
    eager, compiled = built["off"], built["on"]
    assert eager.name == compiled.name, "compile must not change the experts' key"
    assert read_experts_attrs(eager)["provenance"]["compiled"] == [False]
    assert read_experts_attrs(compiled)["provenance"]["compiled"] == [True], "torch.compile fell back to eager here"
    with h5py.File(eager, "r") as a, h5py.File(compiled, "r") as b:
        e, c = a["trajectories"][()], b["trajectories"][()]
        # the same arithmetic, other kernels: differences of float32 rounding only (measured here:
        # 3.5e-7 with parameters up to 1.0 and 2.7e-3 of motion after 2 epochs); 1e-5 of the
        # scale and 0.5 % of the motion would still catch another seed, lr or amp
        scale = np.abs(e).max()
        motion = np.abs(e[:, -1] - e[:, 0]).max()
        assert np.abs(c - e).max() <= 1e-5 * scale
        assert np.abs(c - e).max() <= 5e-3 * motion
        np.testing.assert_allclose(b["train_loss"][()], a["train_loss"][()], rtol=1e-5)
    # and an eager run finds the compiled build in the cache
    again = pipeline.run(_cfg(compiled.parent.parent / "data.h5", tmp_path / "again.h5", experts_only=True, compile="off", amp="off",
                                    num_experts=1))
    assert again["experts"]["built"] is False


def test_compile_switch_means_the_experts_training(data, tmp_path):
    from medcondense.distill.mtt import MTTMethod

    for mode, expected in (("on", True), ("off", False), ("auto", False)):
        hp = MTTMethod.resolve(_cfg(data, tmp_path / "x.h5", compile=mode), torch.device("cpu"), True)
        assert hp.compile is expected, mode
