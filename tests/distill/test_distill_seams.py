"""The engine's seams: the method table, a method with its own state and gradients, checkpoint
format 2, and class shards."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from distill_helpers import fast_config, write_blob
from medcondense import store
from medcondense.distill import base, pipeline, registry
from medcondense.distill.base import DataSpec, Engine, EngineHooks, Method, RealSampler, checkpoint_path_for, initial_state
from medcondense.errors import ConfigError, Interrupted, RuntimeFailure


@pytest.fixture
def data(tmp_path):
    return write_blob(tmp_path / "data.h5")


# --------------------------------------------------------------------------- the table


def test_every_table_entry_imports_a_method_of_that_name():
    for name in registry.METHODS:
        cls = registry.method_class(name)
        assert issubclass(cls, Method) and cls.name == name
    for name in registry.CORESETS:
        with pytest.raises(ConfigError, match="is a coreset"):
            registry.method_class(name)
    from medcondense.distill.coreset import _SELECTORS

    assert set(_SELECTORS) == set(registry.CORESETS)
    assert registry.method_names() == [*registry.METHODS, *registry.CORESETS]


def test_cli_method_help_and_option_check_list_the_table(data, tmp_path, monkeypatch):
    import typer.main

    from medcondense.cli import app

    command = typer.main.get_command(app).commands["distill"]
    (method_help,) = [p.help for p in command.params if p.name == "method"]
    listed = method_help.split("(synthetic)")[0].split(" or ")[0]
    assert [n.strip() for n in listed.split("|")] == list(registry.METHODS)
    assert " | ".join(registry.CORESETS) in method_help
    monkeypatch.setitem(registry.METHODS, "toy", f"{__name__}:ToyMethod")
    expected = ", ".join([*registry.METHODS, *registry.CORESETS])  # every table entry, the toy included
    assert "toy, random, herding, kcenter" in expected
    with pytest.raises(ConfigError, match=f"expected one of {expected}"):
        pipeline.check_options(fast_config(data, tmp_path / "x.h5", "gan"))


def test_importing_the_table_imports_no_torch():
    probe = "import sys, medcondense.distill.registry as r; r.method_names(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


# --------------------------------------------------------------------------- a method with its own state


class ToyMethod(Method):
    """No real batches, one learnable extra tensor with its own optimizer, its own gradients.

    Each step pulls ``scale * syn`` towards fresh noise drawn from the engine's generator.
    """

    name = "toy"
    preset_iterations = {"quick": 5, "paper": 5}
    preset_batch_real = {"quick": 8, "paper": 8}
    uses_real_batches = False
    writes_own_gradients = True
    #: the extra tensor after the last step of the latest run (read by the tests)
    last_scale: torch.Tensor | None = None
    #: raise RuntimeFailure in after_step of this step (counted from 1 in a run)
    fail_on_step: int | None = None

    @classmethod
    def refine(cls, hp, config, device):
        hp.extra = {"target_std": 0.5}
        return hp

    def init_state(self, syn, generator):
        self.scale = (1 + 0.1 * torch.randn(syn.shape[0], generator=generator)).to(self.device).requires_grad_(True)
        self.scale_optimizer = torch.optim.SGD([self.scale], lr=0.05, momentum=0.9)
        self.steps = 0

    def state_dict(self):
        return {"scale": self.scale, "optimizer": self.scale_optimizer.state_dict()}

    def load_state_dict(self, state):
        self.scale = state["scale"].clone().to(self.device).requires_grad_(True)
        self.scale_optimizer = torch.optim.SGD([self.scale], lr=0.05, momentum=0.9)
        self.scale_optimizer.load_state_dict(state["optimizer"])
        self.steps = 0

    def backward(self, state, syn, generator):
        target = torch.randn(syn.shape, generator=generator).to(syn.device) * self.hp.extra["target_std"]
        self.scale_optimizer.zero_grad(set_to_none=True)
        loss = ((syn * self.scale.view(-1, 1, 1, 1) - target) ** 2).flatten(1).mean(dim=1).sum()
        loss.backward()
        return float(loss.detach())

    def after_step(self, state):
        self.scale_optimizer.step()
        self.steps += 1
        type(self).last_scale = self.scale.detach().clone()
        if self.steps == self.fail_on_step:
            raise RuntimeFailure("toy step size became negative")


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry.METHODS, "toy", f"{__name__}:ToyMethod")
    monkeypatch.setattr(ToyMethod, "last_scale", None)
    sampled = []
    original = RealSampler.sample

    def counting(self, c, n, generator):
        sampled.append(c)
        return original(self, c, n, generator)

    monkeypatch.setattr(RealSampler, "sample", counting)
    return sampled


def _interrupt_at(k: int) -> EngineHooks:
    def hook(iteration: int, loss: float) -> None:
        if iteration == k:
            raise KeyboardInterrupt

    return EngineHooks(after_iteration=hook)


def test_a_method_with_own_state_and_gradients_resumes_bit_exactly(data, tmp_path, toy):
    cfg = dict(init="noise", iterations=5, checkpoint_every=0, lr_img=10.0)
    full = pipeline.run(fast_config(data, tmp_path / "full.h5", "toy", **cfg))
    full_scale = ToyMethod.last_scale
    assert toy == [], "a method without real batches makes the engine sample none"
    assert full["hyperparameters"]["extra"] == {"target_std": 0.5}
    out = tmp_path / "resumed.h5"
    with pytest.raises(Interrupted):
        pipeline.run(fast_config(data, out, "toy", **cfg), hooks=_interrupt_at(2))
    payload = torch.load(checkpoint_path_for(out), weights_only=True)
    assert payload["format"] == base.CHECKPOINT_FORMAT == 2 and payload["iteration"] == 3
    kept_scale = payload["method_state"]["scale"]
    assert payload["method_state"]["optimizer"]["state"], "the extra optimizer's momentum is kept"
    assert not torch.equal(kept_scale, full_scale), "the extra tensor keeps learning after iteration 2"
    ToyMethod.last_scale = None
    pipeline.run(fast_config(data, out, "toy", resume=True, **cfg))
    assert torch.equal(ToyMethod.last_scale, full_scale)
    assert torch.equal(torch.from_numpy(store.read(out).images), torch.from_numpy(store.read(full["output"]).images))
    assert store.read(out).attrs["loss_curve"] == store.read(full["output"]).attrs["loss_curve"]
    assert store.read(out).attrs["hyperparameters"]["extra"] == {"target_std": 0.5}


def test_a_runtime_failure_of_the_method_keeps_the_last_good_checkpoint(data, tmp_path, toy, monkeypatch):
    monkeypatch.setattr(ToyMethod, "fail_on_step", 3)  # one step per iteration: iteration 2 fails
    out = tmp_path / "syn.h5"
    with pytest.raises(RuntimeFailure, match="toy step size became negative.*checkpoint of iteration 1") as info:
        pipeline.run(fast_config(data, out, "toy", init="noise", iterations=5, checkpoint_every=0, lr_img=10.0))
    assert info.value.exit_code == 1 and not out.exists()
    assert torch.load(checkpoint_path_for(out), weights_only=True)["iteration"] == 2


def test_a_checkpoint_of_the_older_format_is_refused_with_exit_2(data, tmp_path):
    from medcondense.cli import app

    out = tmp_path / "syn.h5"
    with pytest.raises(Interrupted):
        pipeline.run(fast_config(data, out, "dm"), hooks=_interrupt_at(0))
    checkpoint = checkpoint_path_for(out)
    payload = torch.load(checkpoint, weights_only=True)
    payload["format"] = 1
    del payload["method_state"]
    torch.save(payload, checkpoint)
    result = CliRunner().invoke(app, ["distill", str(data), "--method", "dm", "--ipc", "2", "--iterations", "4",
                                      "--batch-real", "8", "--device", "cpu", "-o", str(out), "--resume"])
    assert result.exit_code == 2, result.output
    assert "checkpoint of an older format" in result.output and "delete it to start over" in result.output
    assert "Traceback" not in result.output and not out.exists()


# --------------------------------------------------------------------------- class shards


def _dm_run(data, tmp_path, classes):
    """Two DM iterations through the Engine computing only ``classes``; the final state."""
    cpu = torch.device("cpu")
    real = store.read(data)
    x, y, _, _ = pipeline._standardized_train(real, cpu)
    spec = DataSpec(1, real.image_shape[1], real.num_classes)
    sampler = RealSampler([x[y == c] for c in range(spec.num_classes)])
    config = fast_config(data, tmp_path / "unused.h5", "dm", iterations=1, amp="off", compile="off", lr_img=1.0)
    hp = pipeline.resolve_hyperparameters(config, cpu, True)
    method = registry.method_class("dm")(hp, spec, cpu)
    generator = torch.Generator().manual_seed(hp.seed)
    syn = pipeline._init_syn(hp, sampler, spec, generator, cpu)
    labels = torch.arange(spec.num_classes).repeat_interleave(hp.ipc)
    engine = Engine(method, sampler, labels, checkpoint=None, checkpoint_every=0, run_key="k", source_hash="s",
                    classes=classes)
    return syn, engine.run(initial_state(syn, generator))


def test_class_shards_compute_their_classes_and_agree_with_one_process(data, tmp_path):
    init, whole = _dm_run(data, tmp_path, None)
    _, listed = _dm_run(data, tmp_path, [3, 2, 1, 0])
    assert torch.equal(whole.syn, listed.syn) and whole.loss_curve == listed.loss_curve
    _, low = _dm_run(data, tmp_path, [0, 1])
    _, high = _dm_run(data, tmp_path, [2, 3])
    rows = 2 * 2  # ipc 2 x classes 0, 1
    assert torch.equal(low.syn[:rows], whole.syn[:rows]) and torch.equal(high.syn[rows:], whole.syn[rows:])
    assert torch.equal(low.syn[rows:], init[rows:]), "classes a shard does not own stay as they were"
    assert torch.equal(low.generator_state, whole.generator_state), "every shard draws for every class"


def test_engine_refuses_classes_outside_the_data(data, tmp_path):
    with pytest.raises(ConfigError, match="subset of 0..3"):
        _dm_run(data, tmp_path, [1, 4])
