"""DC: the gradient-matching distance and the loop table of the reference."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from medcondense.distill.dc import LOOP_TABLE, gradient_distance, loops_for_ipc


def test_distance_matches_a_hand_computed_value():
    # Rows (output nodes) of a 2x2 weight gradient: (1,0)·(1,1) -> cos 1/sqrt2; (0,1)·(0,1) -> cos 1.
    g_syn = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([5.0, -3.0])]
    g_real = [torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.tensor([-1.0, 2.0])]
    expected = (1 - 1 / (math.sqrt(2) + 1e-6)) + (1 - 1 / (1 + 1e-6))
    assert gradient_distance(g_syn, g_real).item() == pytest.approx(expected, rel=1e-6)


def test_biases_contribute_nothing():
    w = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    with_bias = gradient_distance(w + [torch.tensor([1.0, 2.0])], w + [torch.tensor([-7.0, 0.5])])
    assert with_bias.item() == pytest.approx(gradient_distance(w, w).item())
    assert gradient_distance(w, w).item() == pytest.approx(0.0, abs=1e-5)


def test_conv_gradients_are_compared_per_output_channel():
    # A conv gradient [out=2, in=1, 1, 2] holds the same rows as the 2x2 case above.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    expected = (1 - 1 / (math.sqrt(2) + 1e-6)) + (1 - 1 / (1 + 1e-6))
    assert gradient_distance([a], [b]).item() == pytest.approx(expected, rel=1e-6)
    # opposite gradients are as far apart as possible: 1 - (-1) = 2 per row
    assert gradient_distance([a], [-a]).item() == pytest.approx(4.0, rel=1e-5)


def test_distance_is_differentiable_in_the_synthetic_gradients():
    g_syn = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    gradient_distance([g_syn], [torch.tensor([[1.0, 1.0], [0.0, 1.0]])]).backward()
    assert g_syn.grad is not None and g_syn.grad.abs().sum() > 0


def test_loop_table_is_the_reference_one():
    assert LOOP_TABLE == {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
    assert loops_for_ipc(10) == (10, 50)


def test_other_ipcs_take_the_nearest_entry_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert loops_for_ipc(12) == (10, 50)
        assert loops_for_ipc(100) == (50, 10)
    assert "not in the reference loop table" in caplog.text


def _dc_method(**kw):
    from medcondense.distill.base import DataSpec, Hyperparameters
    from medcondense.distill.dc import DCMethod

    hp = Hyperparameters(**{**dict(method="dc", ipc=2, iterations=1, lr_img=0.1, lr_net=0.01, batch_real=8), **kw})
    return DCMethod(hp, DataSpec(1, 16, 3), torch.device("cpu"))


def test_bf16_first_order_passes_keep_the_dc_loss_close_and_the_image_gradient_float32():
    g = torch.Generator().manual_seed(0)
    real = [torch.randn(8, 1, 16, 16, generator=g) for _ in range(3)]
    syn = [torch.randn(2, 1, 16, 16, generator=g) for _ in range(3)]
    exact, bf16 = _dc_method(), _dc_method(amp="bf16")
    torch.manual_seed(0)
    state = exact.begin_iteration()
    losses, grads = [], []
    for method in (exact, bf16):
        images = [s.clone().requires_grad_(True) for s in syn]
        loss = method.loss(state, real, images, [None] * 3)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([i.grad.flatten() for i in images]))
    assert losses[1] == pytest.approx(losses[0], rel=0.02)
    assert grads[1].dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
