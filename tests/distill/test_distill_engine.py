"""The shared loop: every method lowers its loss, runs are deterministic, resume is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill_helpers import fast_config, write_blob
from medcondense.atomic import temporaries_for
from medcondense import store
from medcondense.distill import base, pipeline
from medcondense.distill.base import EngineHooks, checkpoint_path_for
from medcondense.errors import ConfigError, Interrupted, RuntimeFailure


@pytest.fixture
def data(tmp_path):
    return write_blob(tmp_path / "data.h5")


def _mean(values):
    return sum(values) / len(values)


@pytest.mark.parametrize(
    "method, overrides",
    [
        ("dm", dict(iterations=12, lr_img=1.0)),
        ("dc", dict(iterations=6)),
        ("dsa", dict(iterations=6)),
    ],
)
def test_each_method_lowers_its_loss(data, tmp_path, method, overrides):
    # From noise the synthetic images are far from the real ones, so the matching loss must fall.
    cfg = fast_config(data, tmp_path / f"{method}.h5", method, init="noise", **overrides)
    result = pipeline.run(cfg)
    curve = [v for _, v in store.read(cfg.output).attrs["loss_curve"]]
    assert len(curve) == cfg.iterations + 1
    assert _mean(curve[-3:]) < 0.9 * _mean(curve[:3]), curve
    assert result["final_loss"] == pytest.approx(curve[-1])


def test_two_runs_with_the_same_seed_give_identical_images(data, tmp_path):
    a = pipeline.run(fast_config(data, tmp_path / "a.h5", "dsa", iterations=2))
    b = pipeline.run(fast_config(data, tmp_path / "b.h5", "dsa", iterations=2))
    images_a, images_b = store.read(a["output"]).images, store.read(b["output"]).images
    assert np.array_equal(images_a, images_b)
    c = pipeline.run(fast_config(data, tmp_path / "c.h5", "dsa", iterations=2, seed=1))
    assert not np.array_equal(images_a, store.read(c["output"]).images)


def _interrupt_at(k: int) -> EngineHooks:
    def hook(iteration: int, loss: float) -> None:
        if iteration == k:
            raise KeyboardInterrupt

    return EngineHooks(after_iteration=hook)


@pytest.mark.parametrize("method", ["dm", "dsa"])
def test_resume_equals_an_uninterrupted_run(data, tmp_path, method):
    full = pipeline.run(fast_config(data, tmp_path / "full.h5", method, iterations=3))
    out = tmp_path / "resumed.h5"
    with pytest.raises(Interrupted, match="interrupted after iteration 1"):
        pipeline.run(fast_config(data, out, method, iterations=3), hooks=_interrupt_at(1))
    checkpoint = checkpoint_path_for(out)
    assert checkpoint.exists() and not out.exists()
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 2
    resumed = pipeline.run(fast_config(data, out, method, iterations=3, resume=True))
    assert resumed["resumed_from"] == 2
    assert np.array_equal(store.read(full["output"]).images, store.read(out).images)
    assert store.read(full["output"]).attrs["loss_curve"] == store.read(out).attrs["loss_curve"]
    assert not checkpoint.exists(), "the checkpoint is deleted once the output is written"


def test_resume_refuses_a_checkpoint_of_other_settings(data, tmp_path):
    out = tmp_path / "syn.h5"
    with pytest.raises(Interrupted):
        pipeline.run(fast_config(data, out, "dm"), hooks=_interrupt_at(1))
    with pytest.raises(ConfigError, match="other settings") as info:
        pipeline.run(fast_config(data, out, "dm", lr_img=0.5, resume=True))
    assert info.value.exit_code == 2


def test_resume_refuses_a_checkpoint_of_another_input(tmp_path):
    out = tmp_path / "syn.h5"
    first = write_blob(tmp_path / "a.h5")
    with pytest.raises(Interrupted):
        pipeline.run(fast_config(first, out, "dm"), hooks=_interrupt_at(1))
    other = write_blob(tmp_path / "b.h5", seed=7)
    with pytest.raises(ConfigError, match="another input"):
        pipeline.run(fast_config(other, out, "dm", resume=True))


def test_periodic_checkpoints_are_written_atomically(data, tmp_path, monkeypatch):
    saved = []
    real_save = base.save_checkpoint

    def spy(path, state, *args, **kwargs):
        real_save(path, state, *args, **kwargs)
        saved.append(state.iteration)
        assert path.exists() and not temporaries_for(path)

    monkeypatch.setattr(base, "save_checkpoint", spy)
    pipeline.run(fast_config(data, tmp_path / "syn.h5", "dm", iterations=6, checkpoint_every=2))
    assert saved == [2, 4, 6]


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    from medcondense.distill.dm import DMMethod

    calls = {"n": 0}
    original = DMMethod.loss

    def poisoned(self, *args):
        calls["n"] += 1
        loss = original(self, *args)
        return loss * float("nan") if calls["n"] == 4 else loss  # the 4th call is iteration 3

    monkeypatch.setattr(DMMethod, "loss", poisoned)
    out = tmp_path / "syn.h5"
    with pytest.raises(RuntimeFailure, match="became nan at iteration 3") as info:
        pipeline.run(fast_config(data, out, "dm", iterations=6, checkpoint_every=0))
    assert info.value.exit_code == 1
    assert not out.exists() and not temporaries_for(out)
    payload = torch.load(checkpoint_path_for(out), weights_only=True)
    assert payload["iteration"] == 3 and torch.isfinite(payload["syn"]).all()


def test_methods_are_found_by_name_in_the_table():
    from medcondense.distill import registry

    assert registry.method_class("dm").name == "dm"
    assert set(registry.METHODS) >= {"dc", "dsa", "dm"}
    with pytest.raises(ConfigError, match=", ".join(registry.method_names())):
        registry.method_class("gan")


def test_out_of_memory_names_the_knobs_and_keeps_a_checkpoint(data, tmp_path, monkeypatch):
    from medcondense.distill.dm import DMMethod

    def out_of_memory(self, *args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(DMMethod, "loss", out_of_memory)
    out = tmp_path / "syn.h5"
    with pytest.raises(RuntimeFailure, match="out of device memory") as info:
        pipeline.run(fast_config(data, out, "dm"))
    for knob in ("--batch-real", "--batch-classes off", "--ipc"):
        assert knob in str(info.value)
    assert not out.exists() and checkpoint_path_for(out).exists()


def test_a_checkpoint_rebuilds_its_method_from_name_and_config(data, tmp_path):
    out = tmp_path / "syn.h5"
    with pytest.raises(Interrupted):
        pipeline.run(fast_config(data, out, "dsa"), hooks=_interrupt_at(0))
    payload = torch.load(checkpoint_path_for(out), weights_only=True)
    assert payload["method"] == "dsa" and payload["config"]["method"] == "dsa"
    method = base.rebuild_method(payload, base.DataSpec(1, 16, 4), torch.device("cpu"))
    assert type(method).__name__ == "DSAMethod" and method.hp.outer_loop == 2 and method.hp.aug
