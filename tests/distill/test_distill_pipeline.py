"""The distill stage: output format, attributes, coresets, re-runs and bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from distill_helpers import fast_config, write_blob
from medcondense import store
from medcondense.config import DistillConfig
from medcondense.distill import base, pipeline
from medcondense.errors import AlreadyDone, ConfigError, StoreError


@pytest.fixture
def data(tmp_path):
    return write_blob(tmp_path / "data.h5")


def test_output_is_a_valid_synthetic_set_with_its_record(data, tmp_path):
    cfg = fast_config(data, tmp_path / "syn.h5", "dsa", ipc=3)
    result = pipeline.run(cfg)
    attrs = store.validate(cfg.output)
    syn, real = store.read(cfg.output), store.read(data)
    assert syn.kind == "synthetic" and attrs["kind"] == "synthetic"
    assert np.bincount(syn.labels).tolist() == [3, 3, 3, 3]
    assert (syn.split == store.SPLIT_TRAIN).all()
    assert syn.class_names == real.class_names
    assert syn.attrs["method"] == "dsa" and syn.attrs["ipc"] == 3
    assert syn.attrs["source_hash"] == real.attrs["content_hash"] == result["source_hash"]
    hp = syn.attrs["hyperparameters"]
    assert hp["lr_img"] == 0.1 and hp["outer_loop"] == 2 and hp["batch_real"] == 8 and hp["seed"] == 0
    assert "flip" not in hp["aug"], "the blob set marks laterality as meaningful"
    assert [i for i, _ in syn.attrs["loss_curve"]] == list(range(cfg.iterations + 1))
    for key in ("normalization", "preprocessing", "modality", "laterality"):
        assert syn.attrs[key] == real.attrs[key]
    assert set(syn.meta) == {"spacing"}
    prov = syn.attrs["provenance"]
    assert prov["stage"] == "distill" and prov["input_hash"] == result["source_hash"]
    assert "wall_time_s" in prov and prov["versions"]["torch"] == torch.__version__
    assert set(result) >= {"output", "method", "ipc", "kind", "num_images", "wall_time_s", "final_loss",
                           "seconds_per_iteration", "hyperparameters", "content_hash"}


def test_images_are_written_back_in_the_input_units(data, tmp_path):
    # A vanishing learning rate: the synthetic set is its real initialization, de-standardized again.
    cfg = fast_config(data, tmp_path / "syn.h5", "dm", iterations=0, lr_img=1e-12)
    pipeline.run(cfg)
    syn, real = store.read(cfg.output), store.read(data).part(store.SPLIT_TRAIN)
    for image, label in zip(syn.images, syn.labels):
        pool = real.images[real.labels == label]
        assert np.abs(pool - image).reshape(len(pool), -1).max(axis=1).min() < 1e-5


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_coresets_are_subsets_of_real_train_images(data, tmp_path, method):
    cfg = fast_config(data, tmp_path / f"{method}.h5", method, ipc=3)
    result = pipeline.run(cfg)
    subset, train = store.read(cfg.output), store.read(data).part(store.SPLIT_TRAIN)
    assert subset.kind == "subset" and result["kind"] == "subset"
    assert np.bincount(subset.labels).tolist() == [3, 3, 3, 3]
    assert subset.attrs["method"] == method and subset.attrs["source_hash"] == train.attrs["content_hash"]
    for image in subset.images:
        assert (np.abs(train.images - image).reshape(len(train.images), -1).max(axis=1) == 0).any()
    store.validate(cfg.output)


def test_rerun_with_the_same_input_and_config_is_already_done(data, tmp_path):
    cfg = fast_config(data, tmp_path / "syn.h5", "dm")
    first = pipeline.run(cfg)
    with pytest.raises(AlreadyDone) as done:
        pipeline.run(cfg)
    assert done.value.path == cfg.output and done.value.result["content_hash"] == first["content_hash"]
    again = pipeline.run(dataclasses.replace(cfg, overwrite=True))
    assert again["content_hash"] == first["content_hash"]


def test_existing_output_of_another_run_needs_overwrite(data, tmp_path):
    cfg = fast_config(data, tmp_path / "syn.h5", "dm")
    pipeline.run(cfg)
    before = store.read(cfg.output).images
    with pytest.raises(ConfigError, match="different run"):
        pipeline.run(dataclasses.replace(cfg, lr_img=0.5))
    assert np.array_equal(store.read(cfg.output).images, before)


def test_synthetic_or_subset_input_is_refused(data, tmp_path):
    syn = tmp_path / "syn.h5"
    pipeline.run(fast_config(data, syn, "random"))
    with pytest.raises(ConfigError, match="is a subset set") as info:
        pipeline.run(fast_config(syn, tmp_path / "again.h5", "dm"))
    assert info.value.exit_code == 2


def test_ipc_larger_than_a_class_is_refused_naming_the_class(tmp_path):
    data = write_blob(tmp_path / "data.h5", per_class=(3, 1, 1))
    with pytest.raises(ConfigError, match=r"--ipc 5 is larger .*class0 \(3\).*use --ipc 3"):
        pipeline.run(fast_config(data, tmp_path / "syn.h5", "dm", ipc=5))
    assert not (tmp_path / "syn.h5").exists()


@pytest.mark.parametrize("method", ["dm", "random"])
def test_a_class_without_train_images_is_kept_with_no_images(method, tmp_path, caplog):
    # New rule (#13, sites): a class a site has no train images of (kept by a shared protocol, so
    # the sites' files merge) stays in the class list and gets no images; it used to be refused.
    from blob_data import make_blob_set

    image_set = make_blob_set()
    image_set.attrs["sites"] = ["a"]
    keep = ~((image_set.labels == 2) & (image_set.split == store.SPLIT_TRAIN))
    store.write(tmp_path / "data.h5", image_set.select(keep))
    with caplog.at_level("WARNING", logger="medcondense"):
        pipeline.run(fast_config(tmp_path / "data.h5", tmp_path / "syn.h5", method, ipc=2))
    assert any("class2 have no train images" in r.getMessage() for r in caplog.records)
    out = store.read(tmp_path / "syn.h5")
    assert out.class_names == image_set.class_names
    assert sorted(set(out.labels.tolist())) == [0, 1, 3] and np.bincount(out.labels).tolist() == [2, 2, 0, 2]
    assert out.attrs["sites"] == ["a"]
    if method == "random":  # the coreset's images are the real train images of the class its label names
        real = store.read(tmp_path / "data.h5")
        for img, label in zip(out.images, out.labels):
            match = np.flatnonzero((real.images == img).all(axis=(1, 2, 3)))
            assert real.labels[match[0]] == label


def test_a_set_without_train_images_is_refused(tmp_path):
    from blob_data import make_blob_set

    image_set = make_blob_set()
    store.write(tmp_path / "data.h5", image_set.select(image_set.split != store.SPLIT_TRAIN))
    with pytest.raises(ConfigError, match="no train images"):
        pipeline.run(fast_config(tmp_path / "data.h5", tmp_path / "syn.h5", "dm"))


def test_missing_input_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no such file") as info:
        pipeline.run(fast_config(tmp_path / "nope.h5", tmp_path / "syn.h5", "dm"))
    assert info.value.exit_code == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(method="tesla"), "dc, dsa, dm, mtt, dp-dm, idm, random, herding, kcenter"),
        (dict(preset="fast"), "quick, paper, medmnist"),
        (dict(init="zeros"), "real, noise"),
        (dict(aug=["color", "warp"]), "valid ones are color, crop, cutout, flip, scale, rotate"),
        (dict(batch_classes="maybe"), "auto, on, off"),
        (dict(amp="fp16"), "auto, off, bf16"),
        (dict(compile="yes"), "--compile 'yes': expected one of auto, on, off"),
        (dict(ipc=0), "--ipc 0"),
        (dict(batch_real=0), "--batch-real 0"),
    ],
)
def test_bad_options_name_the_valid_values(data, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        pipeline.run(fast_config(data, tmp_path / "syn.h5", **{"method": "dsa", **overrides}))


def test_presets_and_defaults_follow_the_reference(data):
    cpu = torch.device("cpu")
    paper = {m: pipeline.resolve_hyperparameters(DistillConfig(method=m, ipc=10, preset="paper"), cpu, True)
             for m in ("dc", "dsa", "dm")}
    assert paper["dc"].iterations == paper["dsa"].iterations == 1000 and paper["dm"].iterations == 20000
    assert paper["dc"].lr_img == 0.1 and paper["dm"].lr_img == 1.0 and paper["dc"].lr_net == 0.01
    assert all(hp.batch_real == 256 for hp in paper.values())
    assert (paper["dsa"].outer_loop, paper["dsa"].inner_loop) == (10, 50)
    assert paper["dc"].aug == [] and "flip" not in paper["dsa"].aug
    quick = pipeline.resolve_hyperparameters(DistillConfig(method="dm", ipc=10, iterations=7, batch_real=32), cpu, False)
    assert quick.iterations == 7 and quick.batch_real == 32 and "flip" in quick.aug
    assert pipeline.resolve_hyperparameters(DistillConfig(method="dm", aug=["none"]), cpu, True).aug == []
    fp32 = pipeline.resolve_hyperparameters(DistillConfig(method="dm", amp="off"), cpu, True)
    assert fp32.batch_classes is False and fp32.amp == "off"
    bf16 = pipeline.resolve_hyperparameters(DistillConfig(method="dm", amp="bf16"), cpu, True)
    assert bf16.batch_classes is False and bf16.amp == "bf16", "on a CPU one class at a time measured faster"
    cuda = pipeline.resolve_hyperparameters(DistillConfig(method="dm"), torch.device("cuda"), True)
    assert cuda.batch_classes is True and cuda.amp == "off" and cuda.compile is False
    dc = pipeline.resolve_hyperparameters(DistillConfig(method="dc", batch_classes="on"), cpu, True)
    assert dc.batch_classes is False, "DC/DSA compare per-class gradients"
    assert dc.amp == ("bf16" if base.cpu_has_fast_bf16() else "off")
    assert pipeline.resolve_hyperparameters(DistillConfig(method="dsa", amp="bf16"), cpu, True).amp == "bf16"


def test_compile_auto_needs_a_long_cpu_run_and_a_cxx_compiler(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    with_compiler, without = tmp_path / "with", tmp_path / "without"
    with_compiler.mkdir()
    without.mkdir()
    cxx = with_compiler / "g++"
    cxx.write_text("#!/bin/sh\nexit 0\n")
    cxx.chmod(0o755)

    def resolve(path, **kw):
        monkeypatch.setenv("PATH", str(path))
        return pipeline.resolve_hyperparameters(DistillConfig(**{"batch_real": 100, **kw}), cpu, False).compile

    # at least 5000 real images per class over the run (updates x batch_real)
    # DM: one update per iteration; 49 iterations are 50 updates (iterations 0..49)
    assert resolve(with_compiler, method="dm", iterations=49) is True
    assert resolve(with_compiler, method="dm", iterations=48) is False
    assert resolve(without, method="dm", iterations=1000) is False
    # DC: outer_loop updates per iteration (IPC 10: 10), so 5 iterations (0..4) are enough
    assert resolve(with_compiler, method="dc", ipc=10, iterations=4) is True
    assert resolve(with_compiler, method="dc", ipc=1, iterations=4) is False
    assert resolve(with_compiler, method="dm", preset="quick") is True  # 201 x 64
    assert resolve(with_compiler, method="dm", iterations=60, batch_real=64) is False  # the demo: 61 x 64
    assert resolve(without, method="dm", iterations=1, compile="on") is True
    assert resolve(with_compiler, method="dm", iterations=1000, compile="off") is False
