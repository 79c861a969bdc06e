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
