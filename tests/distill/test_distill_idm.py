"""IDM (#17): factorised images, the trained network queue, coreset initialisation."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from medcondense import factorised, store
from medcondense.distill import pipeline
from medcondense.distill.base import EngineHooks, checkpoint_path_for
from medcondense.errors import ConfigError, Interrupted

from distill_helpers import fast_config, write_blob

# a queue that changes within a few iterations: a new net every 2, a queue of 3, 2 train steps
IDM_FAST = dict(ipc=1, iterations=5, batch_real=8, checkpoint_every=2, net_queue=3)


@pytest.fixture
def data(tmp_path):
    return write_blob(tmp_path / "data.h5")


@pytest.fixture(autouse=True)
def short_queue(monkeypatch):
    from medcondense.distill import idm

    monkeypatch.setitem(idm.DEFAULTS, "net_interval", 2)
    monkeypatch.setitem(idm.DEFAULTS, "train_steps", 2)
    monkeypatch.setitem(idm.TRAIN_BATCH, "quick", 16)


def test_encode_then_decode_keeps_shapes_labels_and_counts():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(3 * 2 * 4, 1, 16, 16, generator=g)  # 3 classes x ipc 2 x factor**2 tiles
    stored = factorised.encode_tensor(real, 2)
    assert stored.shape == (6, 1, 16, 16)
    labels = np.repeat(np.arange(3), 2)
    image_set = store.ImageSet(images=stored.numpy(), labels=labels, split=np.zeros(6, np.uint8),
                               class_names=["a", "b", "c"], kind="synthetic",
                               attrs={factorised.ATTR: factorised.describe(2), "ipc": 2})
    out = factorised.decoded(image_set)
    assert out.images.shape == (24, 1, 16, 16)
    assert np.array_equal(out.labels, np.repeat(np.arange(3), 8))
    assert np.bincount(out.labels).tolist() == [8, 8, 8]
    assert out.attrs["decoded_from"] == {"factor": 2, "stored_images": 6} and factorised.ATTR not in out.attrs
    # decoded tile k of stored image i is (a blurred copy of) real image 4 i + k
    blurred = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(real, 2), scale_factor=2, mode="bilinear")
    assert np.allclose(out.images, blurred.numpy(), atol=1e-5)
    # numpy and torch decoders agree (one matrix), and a plain set is returned unchanged
    assert np.allclose(factorised.decode_tensor(stored, 2).numpy(), out.images, atol=1e-6)
    plain = store.ImageSet(images=stored.numpy(), labels=labels, split=np.zeros(6, np.uint8), class_names=["a", "b", "c"])
    assert factorised.decoded(plain) is plain


def test_idm_writes_a_factorised_schema_2_file_and_resumes_bit_exactly(data, tmp_path):
    full = pipeline.run(fast_config(data, tmp_path / "full.h5", "idm", **IDM_FAST))
    with h5py.File(full["output"], "r") as f:
        assert f.attrs["schema"] == "medcondense/2"
    syn = store.read(full["output"])
    assert syn.n == 4 and syn.attrs["factorised"]["factor"] == 2  # stored IPC = what was asked
    assert full["num_images"] == 4 and full["decoded_images"] == 16
    assert syn.attrs["hyperparameters"]["extra"]["net_queue"] == 3
    out = tmp_path / "resumed.h5"

    def stop(iteration: int, loss: float) -> None:
        if iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        pipeline.run(fast_config(data, out, "idm", **IDM_FAST), hooks=EngineHooks(after_iteration=stop))
    state = torch.load(checkpoint_path_for(out), weights_only=True)["method_state"]
    assert len(state["nets"]) == 3 and int(state["seen"].sum()) > 0  # a full, trained queue is checkpointed
    pipeline.run(fast_config(data, out, "idm", **IDM_FAST, resume=True))
    assert np.array_equal(syn.images, store.read(out).images)
    assert syn.attrs["loss_curve"] == store.read(out).attrs["loss_curve"]
    again = pipeline.run(fast_config(data, tmp_path / "again.h5", "idm", **IDM_FAST))
    assert np.array_equal(syn.images, store.read(again["output"]).images)  # reproducible from the seed
    other = pipeline.run(fast_config(data, tmp_path / "other.h5", "idm", **IDM_FAST, seed=1))
    assert not np.array_equal(syn.images, store.read(other["output"]).images)


def test_plain_files_stay_schema_1(data, tmp_path):
    out = pipeline.run(fast_config(data, tmp_path / "dm.h5", "dm", iterations=1))
    with h5py.File(out["output"], "r") as f:
        assert f.attrs["schema"] == "medcondense/1"


def test_factor_1_idm_is_not_factorised(data, tmp_path):
    out = pipeline.run(fast_config(data, tmp_path / "f1.h5", "idm", **{**IDM_FAST, "iterations": 1}, factor=1))
    assert "factorised" not in store.read(out["output"]).attrs


def test_idm_options_are_refused_for_other_methods(data, tmp_path):
    with pytest.raises(ConfigError, match="--factor is an option of --method idm"):
        pipeline.run(fast_config(data, tmp_path / "x.h5", "dm", factor=2))
    with pytest.raises(ConfigError, match="multiple of it"):
        pipeline.run(fast_config(data, tmp_path / "x.h5", "idm", **IDM_FAST, factor=3))


def _train_pools(data):
    real = store.read(data)
    train = real.part(store.SPLIT_TRAIN)
    mean, std = real.normalization_stats()
    x = (torch.as_tensor(train.images) - torch.as_tensor(mean).view(1, -1, 1, 1)) / torch.as_tensor(std).view(1, -1, 1, 1)
    y = torch.as_tensor(train.labels)
    return [x[y == c] for c in range(real.num_classes)]


@pytest.mark.parametrize("rule", ["herding", "kcenter"])
def test_coreset_initialisation_starts_from_the_rules_picks(data, rule):
    from medcondense.distill.base import DataSpec, Hyperparameters, RealSampler
    from medcondense.distill.coreset import default_embedding_net, embed_images

    pools = _train_pools(data)
    hp = Hyperparameters(method="dm", ipc=2, iterations=1, lr_img=1.0, lr_net=0.01, batch_real=8, init=rule)
    generator = torch.Generator().manual_seed(5)
    syn = pipeline._init_syn(hp, RealSampler(pools), DataSpec(1, 16, 4), generator, torch.device("cpu"))
    # the same random embedding the init used: the first draw of a generator seeded alike
    net = default_embedding_net(torch.cat(pools), 4, torch.Generator().manual_seed(5))
    for c, pool in enumerate(pools):
        features = embed_images(net, pool)
        first = syn[2 * c]
        index = int(((pool - first).flatten(1).abs().sum(1)).argmin())
        assert torch.equal(pool[index], first), "the initial images are real images of the class"
        nearest_mean = int((features - features.mean(0)).norm(dim=1).argmin())
        assert index == nearest_mean, f"{rule}'s first pick is the image nearest the class mean"
        second = int(((pool - syn[2 * c + 1]).flatten(1).abs().sum(1)).argmin())
        if rule == "kcenter":  # the second is the farthest from the first
            assert second == int((features - features[index]).norm(dim=1).argmax())
        else:  # herding's second brings the mean of two closest to the class mean
            pair = (features[index] + features) / 2
            distance = (pair - features.mean(0)).norm(dim=1)
            distance[index] = float("inf")
            assert second == int(distance.argmin())


def test_coreset_init_runs_through_the_stage_for_idm(data, tmp_path):
    out = pipeline.run(fast_config(data, tmp_path / "h.h5", "idm", **{**IDM_FAST, "iterations": 0}, init="herding"))
    assert store.read(out["output"]).attrs["hyperparameters"]["init"] == "herding"
    with pytest.raises(ConfigError, match="--init herding is for synthetic methods"):
        pipeline.run(fast_config(data, tmp_path / "c.h5", "random", init="herding"))


@pytest.mark.parametrize(("amp", "dtype"), [("bf16", torch.bfloat16), ("off", torch.float32)])
def test_the_queue_trains_under_the_runs_amp(data, amp, dtype):
    """The queue's training is most of an IDM iteration: it runs under the run's --amp like the
    method's other network passes (bf16 autocast), and in float32 with --amp off."""
    from medcondense.config import DistillConfig
    from medcondense.distill.base import DataSpec, Hyperparameters, RealSampler
    from medcondense.distill.idm import IDMMethod

    hp = Hyperparameters(method="idm", ipc=1, iterations=2, lr_img=0.2, lr_net=0.01, batch_real=8, amp=amp)
    hp = IDMMethod.refine(hp, DistillConfig(method="idm", ipc=1, net_queue=3), torch.device("cpu"))
    method = IDMMethod(hp, DataSpec(1, 16, 4), torch.device("cpu"))
    method.build_net = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 4))
    method.sampler = RealSampler(_train_pools(data))
    generator = torch.Generator().manual_seed(0)
    method.init_state(torch.zeros(4, 1, 16, 16), generator)
    seen = []
    for net in method.nets:
        net[1].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = [[p.clone() for p in net.parameters()] for net in method.nets]
    method._train_queue(generator)
    assert seen and set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for net in method.nets for p in net.parameters()), "weights stay float32"
    trained = [any(not torch.equal(a, b) for a, b in zip(old, net.parameters())) for old, net in zip(before, method.nets)]
    assert sum(trained) == hp.extra["train_nets"], "the queue's training steps ran"
