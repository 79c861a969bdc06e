"""Expert trajectories: the HDF5 file, its key, resume bit for bit, and refusal by the image stages."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from medcondense import store
from medcondense.distill.experts import (
    EXPERTS_SCHEMA,
    BuildHooks,
    ExpertSettings,
    build_experts,
    default_experts_path,
    experts_key,
    open_experts,
    parts_folder,
)
from medcondense.errors import ConfigError, StoreError

TINY_NET = {"name": "convnet", "width": 8, "depth": 2, "norm": "instancenorm"}


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(40, 1, 8, 8, generator=g)
    labels = torch.arange(4).repeat_interleave(10)
    images[labels == 1, :, :4] += 2.0
    return images, labels


def _settings(**overrides) -> ExpertSettings:
    values = dict(num_experts=3, train_epochs=2, lr_teacher=0.01, batch_train=16, aug=("crop", "scale"), net=TINY_NET, seed=5)
    values.update(overrides)
    return ExpertSettings(**values)


def _build(path: Path, settings: ExpertSettings, hooks: BuildHooks | None = None, seed: int = 0) -> Path:
    images, labels = _data(seed)
    key = experts_key(f"source{seed}", settings)
    return build_experts(path, images, labels, 4, settings, key=key, source_hash=f"source{seed}",
                         class_names=["a", "b", "c", "d"], hooks=hooks)


def test_expert_file_layout(tmp_path):
    settings = _settings()
    path = _build(tmp_path / "e.h5", settings)
    with h5py.File(path, "r") as f:
        traj = f["trajectories"]
        assert traj.dtype == np.float32
        assert traj.shape[:2] == (3, 3)
        assert traj.chunks == (1, 1, traj.shape[2])
        assert f["train_loss"].shape == (3, 2) and f["train_accuracy"].shape == (3, 2)
        assert f.attrs["schema"] == EXPERTS_SCHEMA
    experts = open_experts(path, source_hash="source0")
    assert experts.num_experts == 3 and experts.num_epochs == 2
    names = experts.attrs["parameter_names"]
    assert names[0] == "features.0.weight" and names[-1] == "classifier.bias"
    assert experts.num_parameters == sum(int(np.prod(s)) for s in experts.attrs["parameter_shapes"])
    # snapshots move: SGD changed the parameters every epoch
    assert not torch.equal(experts.snapshot(0, 0), experts.snapshot(0, 1))
    assert not torch.equal(experts.snapshot(0, 0), experts.snapshot(1, 0))  # experts start apart
    assert not parts_folder(path).exists()


def test_interrupted_build_resumes_bit_for_bit(tmp_path):
    settings = _settings(num_experts=2)
    whole = _build(tmp_path / "whole.h5", settings)

    class Stop(Exception):
        pass

    def stop_after_first(e: int) -> None:
        if e == 0:
            raise Stop

    target = tmp_path / "resumed.h5"
    with pytest.raises(Stop):
        _build(target, settings, BuildHooks(after_expert=stop_after_first))
    assert not target.exists(), "an interrupted build must not leave a finished-looking file"
    assert (parts_folder(target) / "expert_00000.h5").exists()
    trained = []
    _build(target, settings, BuildHooks(after_expert=trained.append))
    assert trained == [1], "the finished expert is reused, not retrained"
    with h5py.File(whole, "r") as a, h5py.File(target, "r") as b:
        for name in ("trajectories", "train_loss", "train_accuracy"):
            assert np.array_equal(a[name][()], b[name][()])


def test_key_changes_with_every_setting_and_the_content():
    base = _settings()
    key = experts_key("h", base)
    assert experts_key("h", _settings()) == key
    assert experts_key("other", base) != key
    for change in (dict(num_experts=4), dict(train_epochs=3), dict(lr_teacher=0.02), dict(batch_train=8),
                   dict(aug=("crop",)), dict(seed=6), dict(amp="bf16"), dict(net={**TINY_NET, "width": 16})):
        assert experts_key("h", _settings(**change)) != key, change


def test_open_refuses_other_input_and_other_network(tmp_path):
    path = _build(tmp_path / "e.h5", _settings())
    with pytest.raises(ConfigError, match="another input"):
        open_experts(path, source_hash="different")
    with pytest.raises(ConfigError, match="another network"):
        open_experts(path, parameter_names=["x"], parameter_shapes=[[1]])


def test_image_stages_refuse_expert_files(tmp_path):
    path = _build(tmp_path / "e.h5", _settings())
    with pytest.raises(StoreError, match="expert trajectory file"):
        store.read(path)
    with pytest.raises(StoreError, match="expert trajectory file"):
        store.read_attrs(path)


def test_default_path_beside_input_or_output(tmp_path):
    data = tmp_path / "in" / "data.h5"
    data.parent.mkdir()
    assert default_experts_path(data, "ab" * 32) == data.parent / "data.h5.experts" / f"{'ab' * 8}.h5"
    data.parent.chmod(0o555)
    try:
        if not __import__("os").access(data.parent, __import__("os").W_OK):  # root ignores modes
            out = tmp_path / "out" / "syn.h5"
            assert default_experts_path(data, "ab" * 32, out).parent == out.parent / "data.h5.experts"
    finally:
        data.parent.chmod(0o755)


def test_export_cli_refuses_an_expert_file(tmp_path):
    from typer.testing import CliRunner

    from medcondense.cli import app

    path = _build(tmp_path / "e.h5", _settings(num_experts=1, train_epochs=1))
    result = CliRunner().invoke(app, ["export", str(path), "--format", "png", "-o", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "expert trajectory file" in result.output
    assert not (tmp_path / "out").exists()
