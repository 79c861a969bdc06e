"""DM's loss and DSA's Siamese augmentation inside the methods."""

from __future__ import annotations

import pytest
import torch

from medcondense.distill import base
from medcondense.distill.base import DataSpec, Hyperparameters
from medcondense.distill.dm import DMMethod
from medcondense.distill.dsa import DSAMethod


def _hp(**kw) -> Hyperparameters:
    values = dict(method="dm", ipc=2, iterations=1, lr_img=1.0, lr_net=0.01, batch_real=6)
    return Hyperparameters(**{**values, **kw})


def _batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    real = [torch.randn(6, 1, 16, 16, generator=g) for _ in range(3)]
    syn = [torch.randn(2, 1, 16, 16, generator=g) for _ in range(3)]
    return real, syn


def test_dm_loss_is_the_squared_distance_of_class_mean_embeddings():
    torch.manual_seed(0)
    method = DMMethod(_hp(), DataSpec(1, 16, 3), torch.device("cpu"))
    net = method.begin_iteration()
    real, syn = _batches()
    expected = sum(((net.embed(r).mean(0) - net.embed(s).mean(0)) ** 2).sum() for r, s in zip(real, syn))
    assert method.loss(net, real, syn, [None] * 3).item() == pytest.approx(expected.item(), rel=1e-5)
    assert all(not p.requires_grad for p in net.parameters())


def test_batching_classes_does_not_change_the_dm_loss():
    torch.manual_seed(0)
    per_class = DMMethod(_hp(batch_classes=False), DataSpec(1, 16, 3), torch.device("cpu"))
    batched = DMMethod(_hp(batch_classes=True), DataSpec(1, 16, 3), torch.device("cpu"))
    net = per_class.begin_iteration()
    real, syn = _batches()
    syn_a = [s.clone().requires_grad_(True) for s in syn]
    syn_b = [s.clone().requires_grad_(True) for s in syn]
    loss_a, loss_b = per_class.loss(net, real, syn_a, [None] * 3), batched.loss(net, real, syn_b, [None] * 3)
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-4)
    loss_a.backward()
    loss_b.backward()
    for a, b in zip(syn_a, syn_b):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6)


def test_bf16_autocast_keeps_the_dm_loss_close():
    torch.manual_seed(0)
    exact = DMMethod(_hp(), DataSpec(1, 16, 3), torch.device("cpu"))
    bf16 = DMMethod(_hp(amp="bf16"), DataSpec(1, 16, 3), torch.device("cpu"))
    net = exact.begin_iteration()
    real, syn = _batches()
    assert bf16.loss(net, real, syn, [None] * 3).item() == pytest.approx(exact.loss(net, real, syn, [None] * 3).item(), rel=0.05)


def test_dsa_applies_the_same_parameters_to_real_and_synthetic_batches(monkeypatch):
    seen = []
    original = base.Augmenter.apply

    def spy(x, params):
        seen.append(params)
        return original(x, params)

    monkeypatch.setattr(base.Augmenter, "apply", staticmethod(spy))
    torch.manual_seed(0)
    method = DSAMethod(_hp(method="dsa", aug=["color", "crop", "rotate"]), DataSpec(1, 16, 3), torch.device("cpu"))
    state = method.begin_iteration()
    g = torch.Generator().manual_seed(0)
    params = [method.augmenter.sample(g) for _ in range(3)]
    real, syn = _batches()
    method.loss(state, real, [s.requires_grad_(True) for s in syn], params)
    # per class: the real batch, then the synthetic batch, with the very same parameter object
    assert seen == [p for p in params for _ in range(2)]
