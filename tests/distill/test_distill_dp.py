"""DP-DM through the distill stage: what the file holds, resume keeps the release, every refusal exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app
from medcondense.distill import pipeline
from medcondense.distill.base import EngineHooks, checkpoint_path_for
from medcondense.errors import Interrupted

from distill_helpers import fast_config, write_blob

DP = dict(dp_epsilon=8.0, dp_unit="image", dp_queries=2, iterations=3, init=None, aug=["none"])
DP_ARGS = ["--method", "dm", "--ipc", "2", "--iterations", "4", "--device", "cpu", "--dp-epsilon", "8",
           "--dp-unit", "image", "--dp-queries", "3", "--aug", "none"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_blob(tmp_path / "data.h5")


def _invoke(*args: str):
    return CliRunner().invoke(app, ["distill", *args])


def _interrupt_at(k: int) -> EngineHooks:
    def hook(iteration: int, loss: float) -> None:
        if iteration == k:
            raise KeyboardInterrupt
    return EngineHooks(after_iteration=hook)


def test_dp_file_holds_the_guarantee_and_nothing_derived_from_the_data(data, tmp_path):
    summary = pipeline.run(fast_config(data, tmp_path / "dp.h5", **DP))
    out = store.read(tmp_path / "dp.h5")
    dp = out.attrs["dp"]
    assert set(dp) == {"epsilon", "delta", "epsilon_spent", "noise_multiplier", "clip", "unit", "queries",
                       "accountant", "opacus_version"}
    assert dp["epsilon"] == 8.0 and 0 < dp["epsilon_spent"] <= 8.0 and dp["noise_multiplier"] > 0
    for leaked in ("source_hash", "run_key", "preprocessing"):
        assert leaked not in out.attrs, leaked
    assert "train_mean" not in json.dumps(out.attrs["normalization"]) and "train_std" not in json.dumps(out.attrs)
    assert out.attrs["provenance"].get("input_hash") in (None, "")
    assert "spacing" not in out.meta
    assert out.attrs["hyperparameters"]["init"] == "noise"
    assert summary["units"] == 96 and "units" not in json.dumps(out.attrs)
    with __import__("h5py").File(tmp_path / "dp.h5", "r") as f:
        assert f.attrs["schema"] == "medcondense/2"  # plain outputs stay /1 (tests/test_store.py)


def test_resume_reuses_the_release_bit_for_bit(data, tmp_path):
    out = tmp_path / "dp.h5"
    with pytest.raises(Interrupted):
        pipeline.run(fast_config(data, out, **DP), hooks=_interrupt_at(1))
    first = torch.load(checkpoint_path_for(out), weights_only=True)["method_state"]["dp_release"]
    with pytest.raises(Interrupted):
        pipeline.run(fast_config(data, out, resume=True, **DP), hooks=_interrupt_at(2))
    second = torch.load(checkpoint_path_for(out), weights_only=True)["method_state"]["dp_release"]
    assert torch.equal(first["sums"], second["sums"]) and torch.equal(first["weights"], second["weights"])
    pipeline.run(fast_config(data, out, resume=True, **DP))
    assert out.exists() and not checkpoint_path_for(out).exists()


def test_the_same_seed_twice_gives_different_releases(data, tmp_path):
    a = pipeline.run(fast_config(data, tmp_path / "a.h5", **DP))
    b = pipeline.run(fast_config(data, tmp_path / "b.h5", **DP))
    assert not np.array_equal(store.read(a["output"]).images, store.read(b["output"]).images)


@pytest.mark.parametrize("extra,message", [
    (["--method", "dc"], "dm"),
    (["--init", "real"], "noise"),
    (["--dp-delta", "0.5"], "1 / units"),
    (["--dp-epsilon", "0"], "positive"),
    (["--dp-clip", "-1"], "--dp-clip"),
    (["--dp-unit", "site"], "--dp-unit"),
])
def test_refusals_exit_2_with_the_reason(data, tmp_path, extra, message):
    result = _invoke(str(data), *DP_ARGS, *extra, "-o", str(tmp_path / "s.h5"))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("args,message", [
    # a DP option without --dp-epsilon would write a set that is not private
    (["--method", "dm", "--dp-delta", "1e-6"], "--dp-delta apply only with --dp-epsilon"),
    (["--method", "dm", "--dp-unit", "image", "--dp-queries", "3"], "--dp-unit, --dp-queries"),
    # a coreset is real images: no DP possible
    (["--method", "herding", "--dp-epsilon", "8"], "a coreset is real images"),
])
def test_dp_asked_where_it_cannot_hold_exits_2(data, tmp_path, args, message):
    result = _invoke(str(data), *args, "--ipc", "2", "--iterations", "0", "--device", "cpu", "-o", str(tmp_path / "s.h5"))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "s.h5").exists()


def test_a_file_normalised_with_train_statistics_is_refused(tmp_path):
    from blob_data import make_blob_set

    real = make_blob_set()
    real.attrs["normalization"] = {**real.attrs["normalization"], "method": "zscore"}
    store.write(tmp_path / "z.h5", real)
    result = _invoke(str(tmp_path / "z.h5"), *DP_ARGS, "-o", str(tmp_path / "s.h5"))
    assert result.exit_code == 2 and "--normalize window" in result.output


def test_batch_norm_is_refused():
    from medcondense.config import DistillConfig
    from medcondense.distill.base import Hyperparameters
    from medcondense.distill.dpdm import DPDMMethod
    from medcondense.errors import ConfigError

    hp = Hyperparameters(method="dp-dm", ipc=1, iterations=1, lr_img=1.0, lr_net=0.01, batch_real=8,
                         net={"name": "convnet", "width": 8, "depth": 2, "norm": "batchnorm"})
    with pytest.raises(ConfigError, match="batch norm"):
        DPDMMethod.refine(hp, DistillConfig(method="dm", dp_epsilon=8.0, init=None), torch.device("cpu"))


def test_missing_opacus_exits_2_naming_the_extra(data, tmp_path):
    argv = ["medcondense", "distill", str(data), *DP_ARGS, "-o", str(tmp_path / "s.h5")]
    code = f"import sys; sys.modules['opacus'] = None; sys.argv = {argv!r}\nfrom medcondense.cli import main\nmain()\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "medcondense[dp]" in done.stderr
