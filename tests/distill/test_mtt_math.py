"""The MTT gradient: the checkpointed backward walk equals the full unroll, exactly.

float64 on a width-16 ConvNet, 8 px, 3 classes, so the comparison is free of float32 noise:
max|walk - unroll| <= 1e-9 * max|unroll| for the images and the step size, and the step size's
gradient matches a central finite difference.
"""

from __future__ import annotations

import pytest
import torch

from medcondense.distill.mtt import (
    ParamLayout,
    StudentStep,
    forward_trajectory,
    functional_forward,
    sample_steps,
    unroll_loss,
    walk_gradients,
)
from medcondense.nets import ConvNet

OPS = ["color", "crop", "cutout", "flip", "scale", "rotate"]


def _problem(syn_steps: int, batch_syn: int, aug: bool, seed: int = 0):
    torch.manual_seed(seed)
    net = ConvNet(1, 3, 8, width=16, depth=2).double()
    layout = ParamLayout.of(net)
    forward = functional_forward(net)
    start = layout.flatten(net)
    target = start + 0.05 * torch.randn(start.shape, dtype=torch.float64)
    syn = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(2)
    generator = torch.Generator().manual_seed(seed + 1)
    steps = sample_steps(6, syn_steps, batch_syn, OPS if aug else [], generator)
    for step in steps:  # float64 augmentation parameters, so the whole problem is float64
        if step.aug is not None:
            step.aug.values = {k: (v.double() if v.is_floating_point() else v) for k, v in step.aug.values.items()}
    lr = torch.tensor(0.05, dtype=torch.float64)
    return forward, syn, labels, lr, start, target, steps


def _unrolled_grads(forward, syn, labels, lr, start, target, steps):
    syn = syn.clone().requires_grad_(True)
    lr = lr.clone().requires_grad_(True)
    loss = unroll_loss(forward, syn, labels, lr, start, target, steps)
    loss.backward()
    return float(loss.detach()), syn.grad, lr.grad


@pytest.mark.parametrize("syn_steps,batch_syn,aug", [(5, 6, False), (6, 4, True)])
def test_walk_equals_unroll(syn_steps, batch_syn, aug):
    problem = _problem(syn_steps, batch_syn, aug)
    loss_u, syn_u, lr_u = _unrolled_grads(*problem)
    walk = walk_gradients(*problem)
    assert walk.loss == pytest.approx(loss_u, rel=1e-12)
    assert float(syn_u.abs().max()) > 0 and float(lr_u.abs()) > 0
    assert float((walk.syn_grad - syn_u).abs().max()) <= 1e-9 * float(syn_u.abs().max())
    assert abs(float(walk.lr_grad - lr_u)) <= 1e-9 * abs(float(lr_u))


def test_step_size_gradient_matches_finite_difference():
    forward, syn, labels, lr, start, target, steps = _problem(4, 6, True)
    walk = walk_gradients(forward, syn, labels, lr, start, target, steps)
    h = 1e-6
    plus = unroll_loss(forward, syn, labels, lr + h, start, target, steps)
    minus = unroll_loss(forward, syn, labels, lr - h, start, target, steps)
    numeric = (float(plus.detach()) - float(minus.detach())) / (2 * h)
    assert float(walk.lr_grad) == pytest.approx(numeric, rel=1e-4)


def test_image_gradient_matches_finite_difference_in_one_pixel():
    forward, syn, labels, lr, start, target, steps = _problem(3, 6, False)
    walk = walk_gradients(forward, syn, labels, lr, start, target, steps)
    h = 1e-6
    bump = torch.zeros_like(syn)
    bump[2, 0, 3, 4] = h
    plus = unroll_loss(forward, syn + bump, labels, lr, start, target, steps)
    minus = unroll_loss(forward, syn - bump, labels, lr, start, target, steps)
    numeric = (float(plus.detach()) - float(minus.detach())) / (2 * h)
    assert float(walk.syn_grad[2, 0, 3, 4]) == pytest.approx(numeric, rel=1e-4)


def test_zero_steps_gives_loss_one_and_no_gradient():
    forward, syn, labels, lr, start, target, _ = _problem(0, 6, False)
    walk = walk_gradients(forward, syn, labels, lr, start, target, [])
    assert walk.loss == pytest.approx(1.0, abs=1e-15)
    assert float(walk.syn_grad.abs().max()) == 0.0 and float(walk.lr_grad) == 0.0
    assert float(unroll_loss(forward, syn, labels, lr, start, target, []).detach()) == pytest.approx(1.0, abs=1e-15)


def test_forward_trajectory_takes_sgd_steps():
    forward, syn, labels, lr, start, target, steps = _problem(2, 6, False)
    thetas = forward_trajectory(forward, syn, labels, lr, start, steps)
    assert len(thetas) == 3 and torch.equal(thetas[0], start)
    theta = start.clone().requires_grad_(True)
    ce = torch.nn.functional.cross_entropy(forward(theta, syn[steps[0].indices]), labels[steps[0].indices])
    (grad,) = torch.autograd.grad(ce, theta)
    assert torch.allclose(thetas[1], start - lr * grad, rtol=0, atol=1e-14)


def test_sample_steps_follows_the_reference_chunk_order():
    generator = torch.Generator().manual_seed(3)
    steps = sample_steps(10, 4, 4, [], generator)
    replay = torch.Generator().manual_seed(3)
    first = torch.randperm(10, generator=replay).split(4)
    second = torch.randperm(10, generator=replay).split(4)
    expected = [first[2], first[1], first[0], second[2]]  # the reference pops the last chunk
    assert [s.indices.tolist() for s in steps] == [e.tolist() for e in expected]
    assert all(isinstance(s, StudentStep) and s.aug is None for s in steps)


def test_sample_steps_draws_one_augmentation_per_image():
    steps = sample_steps(6, 3, 4, ["scale", "rotate"], torch.Generator().manual_seed(0))
    for step in steps:
        assert step.aug.op in ("scale", "rotate")
        assert all(v.shape == (len(step.indices),) for v in step.aug.values.values())
