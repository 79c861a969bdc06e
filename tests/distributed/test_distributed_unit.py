"""The torchrun rules that need no launcher: option refusals (exit 2), the one-process group,
class shards with batched classes and bf16, and a dead rank (two real gloo processes)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medcondense import distributed, store
from medcondense.cli import app
from medcondense.config import DistillConfig
from medcondense.distill import pipeline, registry
from medcondense.distill.base import DataSpec, Engine, Method, RealSampler, initial_state
from medcondense.errors import AlreadyDone, ConfigError, Interrupted, RuntimeFailure

from blob_data import make_blob_set
from dist_helpers import HERE, env


class UnsplitMethod(Method):
    """A method that does not declare class shards (the default for a new method)."""

    name = "unsplit"
    preset_iterations = {"quick": 1, "paper": 1}
    preset_batch_real = {"quick": 8, "paper": 8}


@pytest.fixture
def one_thread():
    """One thread, as torchrun gives each rank (the thread count alone changes reduction order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.h5"
    store.write(path, make_blob_set(per_class=(8, 2, 4), size=8))
    return path


def test_methods_declare_whether_they_split_by_class():
    assert all(registry.method_class(name).supports_class_shards for name in ("dc", "dsa", "dm", "idm", "dp-dm"))
    assert registry.method_class("mtt").supports_class_shards is False
    assert "--experts-only" in registry.method_class("mtt").class_shards_refusal
    assert Method.supports_class_shards is False


def test_a_method_without_class_shards_is_refused_under_torchrun(monkeypatch):
    monkeypatch.setitem(registry.METHODS, "unsplit", f"{__name__}:UnsplitMethod")
    config = DistillConfig(input="in.h5", output="out.h5", method="unsplit")
    pipeline.check_distributed(config)  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="cannot be split over 2 processes: it does not declare supports_class_shards"):
        pipeline.check_distributed(config)
    monkeypatch.setattr(UnsplitMethod, "class_shards_refusal", "one trajectory couples all classes", raising=False)
    with pytest.raises(ConfigError, match="one trajectory couples all classes"):
        pipeline.check_distributed(config)
    pipeline.check_distributed(DistillConfig(method="herding"))  # a coreset runs on rank 0


def test_more_ranks_than_classes_and_cuda_n_are_usage_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "5")
    with pytest.raises(ConfigError, match="5 processes but only 4 classes"):
        pipeline.check_class_shards(DistillConfig(input="in.h5", method="dm"), 4)
    pipeline.check_class_shards(DistillConfig(input="in.h5", method="random"), 4)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="cuda"):
        distributed.resolve_device("cuda:1")
    assert distributed.resolve_device("cpu") == torch.device("cpu")


def test_the_collective_timeout_comes_from_the_environment(monkeypatch):
    assert distributed.timeout_seconds() == 600
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "30")
    assert distributed.timeout_seconds() == 30
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ConfigError, match="MEDCONDENSE_DIST_TIMEOUT"):
        distributed.timeout_seconds()


def test_stages_that_do_not_split_refuse_several_ranks_and_rank_1_prints_nothing(monkeypatch, tmp_path, data):
    runner = CliRunner()
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, ["export", str(data), "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "export does not run under torchrun" in result.output
    monkeypatch.setenv("RANK", "1")
    result = runner.invoke(app, ["distill", str(data), "--ipc", "0", "-o", str(tmp_path / "y.h5")])
    assert result.exit_code == 2 and "[rank 1] error: --ipc 0" in result.output


def test_one_process_group_runs_steps_itself_and_rebuilds_errors():
    group = distributed.SINGLE
    assert not group.active and group.is_main and group.mine(3) == [0, 1, 2]
    assert group.all_reduce_values([1.5, 2.0]) == [1.5, 2.0] and group.broadcast("x") == "x"
    assert group.on_main(lambda: 7, "a step") == 7
    rebuilt = distributed._rebuild(("error", ("ConfigError", "bad", "f.h5", "hint")))
    assert isinstance(rebuilt, ConfigError) and str(rebuilt) == "f.h5: bad (hint: hint)"
    assert isinstance(distributed._rebuild(("error", ("Interrupted", "stop", None, None))), Interrupted)
    assert isinstance(distributed._rebuild(("error", ("ValueError", "x", None, None))), RuntimeFailure)
    assert isinstance(distributed._rebuild(("done", ("out.h5", {"a": 1}))), AlreadyDone)


#: batched classes under bf16 autocast, 20 DM iterations at lr 1 on the 8 px set: measured up to
#: 1.5e-2 absolute on images of magnitude ~2.4 (docs/distributed.md, "Equality"); the bound
#: asserted is that measurement with headroom, not a number that any run passes
BF16_BATCHED_BOUND = 3e-2


def _dm_shard(data: Path, tmp_path: Path, classes, iterations: int = 2, **options):
    """DM iterations through the Engine computing only ``classes`` (what one rank computes);
    with ``dp_epsilon`` DP-DM's (the release made in this process, as rank 0 makes it)."""
    cpu = torch.device("cpu")
    real = store.read(data)
    private = options.get("dp_epsilon") is not None
    x, y, _, _ = pipeline._standardized_train(real, cpu, fixed=private)
    spec = DataSpec(1, real.image_shape[1], real.num_classes)
    sampler = RealSampler([x[y == c] for c in range(spec.num_classes)])
    config = DistillConfig(input=str(data), output=str(tmp_path / "unused.h5"), method="dm", ipc=2,
                           iterations=iterations, batch_real=8, device="cpu", **{"compile": "off", **options})
    hp = pipeline.resolve_hyperparameters(config, cpu, True)
    generator = torch.Generator().manual_seed(hp.seed)
    syn = pipeline._init_syn(hp, sampler, spec, generator, cpu)
    labels = torch.arange(spec.num_classes).repeat_interleave(hp.ipc)
    method = registry.method_class(hp.method)(hp, spec, cpu)
    if private:
        method.set_private_data(x, y.numpy(), None)
    method.init_state(syn, generator)
    engine = Engine(method, sampler, labels, checkpoint=None, checkpoint_every=0,
                    run_key="k", source_hash="s", classes=classes)
    return engine.run(initial_state(syn, generator, method.state_dict())).syn


@pytest.mark.parametrize("options, tolerance", [
    (dict(batch_classes="on", amp="off", iterations=20), 1e-5),   # batched: float rounding only
    (dict(batch_classes="on", amp="bf16", iterations=20), BF16_BATCHED_BOUND),  # batched bf16: measured
    (dict(batch_classes="off", amp="bf16"), 0.0),  # one class at a time: bit for bit, even in bf16
    # DP-DM without noise (the release is the same in every process): bit for bit too
    (dict(dp_epsilon=float("inf"), dp_unit="image", dp_queries=2, aug=["none"], init=None), 0.0),
])
def test_dm_shards_of_two_ranks_match_one_process(data, tmp_path, options, tolerance, one_thread):
    whole = _dm_shard(data, tmp_path, None, **options)
    rank0 = _dm_shard(data, tmp_path, [0, 2], **options)  # round-robin over 2 ranks
    rank1 = _dm_shard(data, tmp_path, [1, 3], **options)
    combined = torch.where(torch.tensor([c in (0, 2) for c in range(4) for _ in range(2)]).view(-1, 1, 1, 1), rank0, rank1)
    torch.testing.assert_close(combined, whole, rtol=tolerance, atol=tolerance)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_rank_is_a_clear_error_not_a_hang(tmp_path):
    """Two real gloo processes without torchrun: rank 1 exits after joining; rank 0's next
    all-reduce fails with a RuntimeFailure naming the cause, well within the timeout."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "dead_rank.py")], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                MASTER_PORT=port, MEDCONDENSE_DIST_TIMEOUT="60"),
        ))
    out0, err0 = procs[0].communicate(timeout=120)
    procs[1].communicate(timeout=120)
    assert procs[0].returncode == 1, (out0, err0)
    assert "rank 0: lost contact with the other ranks" in out0 and "MEDCONDENSE_DIST_TIMEOUT" in out0


def test_an_expert_that_fails_on_one_rank_fails_the_round_for_every_rank_and_keeps_the_others(tmp_path):
    """Rank 0 writes the experts of a round that finished and raises the error another rank
    reported, as the same class (exit 2 for a diverged expert on every rank)."""
    import numpy as np

    from medcondense.distill.experts import BuildHooks, ExpertSettings, _read_part, _write_round, part_path

    settings = ExpertSettings(num_experts=2, train_epochs=1)
    target = tmp_path / "experts.h5"
    finished = ("ok", (np.zeros((2, 3), np.float32), np.ones(1, np.float32), np.ones(1, np.float32), 0.1, False))
    diverged = ("error", ("ConfigError", "expert 1 diverged (loss nan); lower --lr-teacher (now 0.01)", None, None))
    with pytest.raises(ConfigError, match="expert 1 diverged"):
        _write_round(target, "key", settings, [0, 1], [finished, diverged], None, BuildHooks())
    assert _read_part(part_path(target, 0), "key", 1) is not None  # kept for the next try
    assert not part_path(target, 1).exists()
