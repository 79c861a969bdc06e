"""Trajectory matching (MTT) as pure functions over a flat parameter vector.

MTT (Cazenavette et al., CVPR 2022) starts a student network at an expert's snapshot
``theta_s``, takes ``N`` SGD steps on (augmented minibatches of) the synthetic images with a
learnable step size ``lr``, and scores the end point against the expert ``M`` epochs later::

    theta_{k+1} = theta_k - lr * grad_theta CE(f(theta_k, aug_k(syn[idx_k])), y[idx_k])
    loss        = ||theta_N - theta_{s+M}||^2 / ||theta_s - theta_{s+M}||^2

Two ways to differentiate ``loss`` with respect to the images and ``lr``:

* :func:`unroll_loss` keeps every step's graph (``create_graph=True``) and lets autograd go
  back through all of them, as the reference ``distill.py`` does. Memory grows with ``N``.
* :func:`walk_gradients` keeps only ``theta_0 .. theta_N`` (plain tensors) and each step's
  minibatch indices and augmentation parameters, then walks backwards, rebuilding one step's
  graph at a time. With ``a_k = dloss/dtheta_k`` and ``g_k`` the step's gradient::

      a_N        = 2 (theta_N - theta_target) / ||theta_s - theta_target||^2
      dloss/dlr += -<g_k, a_{k+1}>
      dloss/dsyn += -lr * (d g_k / d syn)^T a_{k+1}
      a_k        = a_{k+1} - lr * (d g_k / d theta_k)^T a_{k+1}

  Both vector-Jacobian products come from one ``autograd.grad`` of ``<g_k, a_{k+1}>``. This is
  the same gradient as the unroll (the same terms, summed in another order), not an
  approximation: unlike TESLA it keeps the ``d g_k / d theta_k`` terms that link one step to
  the next. Memory is one step's graph plus ``N + 1`` parameter vectors.

The network enters only through ``forward(theta, x) -> logits`` (see :func:`functional_forward`,
which uses ``torch.func.functional_call`` on any ``nn.Module``), so the math is testable on a
tiny float64 net. Augmentation parameters are drawn once per step (:func:`sample_steps`) and
replayed exactly when the walk rebuilds a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a module's parameters in ``named_parameters()`` order (the flat layout)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> list[int]:
        out = []
        for shape in self.shapes:
            n = 1
            for d in shape:
                n *= d
            out.append(n)
        return out

    @property
    def size(self) -> int:
        """Total number of parameters (the length of a flat vector)."""
        return sum(self.numels)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """The module's parameters as one flat detached vector."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` by parameter name (differentiable)."""
        pieces = flat.split(self.numels)
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}


def functional_forward(module: nn.Module) -> Forward:
    """``forward(theta, x)``: ``module`` evaluated with the flat parameters ``theta``.

    Uses :func:`torch.func.functional_call`, so ``theta`` may carry a graph (second order).
    """
    layout = ParamLayout.of(module)

    def forward(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, layout.unflatten(theta), (x,))

    return forward


@dataclass
class StudentStep:
    """What one student step used: which synthetic images and which augmentation draw."""

    indices: torch.Tensor  # long [batch]
    aug: Any = None  # an AugParams (one op, one draw per image) or None


def sample_steps(
    num_images: int, syn_steps: int, batch_syn: int, aug_ops: list[str], generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> list[StudentStep]:
    """Draw every step's minibatch and augmentation, in the reference's order.

    As in the reference ``distill.py``: when the queue of minibatches is empty, shuffle all
    synthetic images and split them into chunks of ``batch_syn``; each step takes the *last*
    chunk. Augmentation is the reference's DSA with ``seed=-1``: one op per step, one draw per
    image. All draws come from ``generator`` (so a resumed run draws the same).
    """
    from medcondense.distill.augment import sample_params

    steps: list[StudentStep] = []
    chunks: list[torch.Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            order = torch.randperm(num_images, generator=generator)
            chunks = list(order.split(batch_syn))
        idx = chunks.pop()
        aug = sample_params(aug_ops, generator, device, per_sample=len(idx)) if aug_ops else None
        steps.append(StudentStep(idx.to(device), aug))
    return steps


def _step_inputs(syn: torch.Tensor, labels: torch.Tensor, step: StudentStep) -> tuple[torch.Tensor, torch.Tensor]:
    idx = step.indices.to(syn.device)
    x = syn[idx]
    if step.aug is not None:
        from medcondense.distill.augment import apply_aug

        x = apply_aug(x, step.aug)
    return x, labels[idx]


def _step_gradient(forward: Forward, theta: torch.Tensor, syn: torch.Tensor, labels: torch.Tensor,
                   step: StudentStep, create_graph: bool) -> torch.Tensor:
    """``grad_theta CE`` of one student step (with a graph when ``create_graph``)."""
    x, y = _step_inputs(syn, labels, step)
    ce = F.cross_entropy(forward(theta, x), y)
    return torch.autograd.grad(ce, theta, create_graph=create_graph)[0]


def _normalized_distance(theta_end: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, denominator): ``||end - target||^2 / ||start - target||^2``.

    The reference divides both sums by the parameter count first; that cancels.
    """
    denominator = ((start - target) ** 2).sum()
    return ((theta_end - target) ** 2).sum() / denominator, denominator


def unroll_loss(
    forward: Forward, syn: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
    start: torch.Tensor, target: torch.Tensor, steps: list[StudentStep],
) -> torch.Tensor:
    """The MTT loss with every step's graph kept (the reference's way): call ``.backward()`` on it.

    ``syn`` and ``lr`` should require grad; ``start``/``target`` are expert snapshots (constants).
    """
    theta = start.detach().clone().requires_grad_(True)
    for step in steps:
        theta = theta - lr * _step_gradient(forward, theta, syn, labels, step, create_graph=True)
    loss, _ = _normalized_distance(theta, start, target)
    return loss


@dataclass
class WalkResult:
    """The loss and its exact gradients from :func:`walk_gradients`."""

    loss: float
    syn_grad: torch.Tensor
    lr_grad: torch.Tensor


def forward_trajectory(
    forward: Forward, syn: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
    start: torch.Tensor, steps: list[StudentStep],
) -> list[torch.Tensor]:
    """``theta_0 .. theta_N`` as plain tensors (first-order passes only, no graph kept)."""
    syn = syn.detach()
    lr_value = lr.detach()
    thetas = [start.detach().clone()]
    for step in steps:
        theta = thetas[-1].requires_grad_(True)
        grad = _step_gradient(forward, theta, syn, labels, step, create_graph=False)
        thetas[-1] = theta.detach()
        thetas.append((theta.detach() - lr_value * grad).detach())
    return thetas


def walk_gradients(
    forward: Forward, syn: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
    start: torch.Tensor, target: torch.Tensor, steps: list[StudentStep],
) -> WalkResult:
    """The MTT loss and its exact gradients for the images and the step size, in memory that
    does not grow with the number of steps (beyond ``N + 1`` parameter vectors).

    See the module docstring for the recursion. Nothing here sets ``.grad``; the caller does.
    """
    syn_leaf = syn.detach().requires_grad_(True)
    lr_value = lr.detach()
    thetas = forward_trajectory(forward, syn_leaf, labels, lr_value, start, steps)
    start = start.detach()
    target = target.detach()
    loss, denominator = _normalized_distance(thetas[-1], start, target)
    adjoint = 2.0 * (thetas[-1] - target) / denominator  # dloss/dtheta_N
    syn_grad = torch.zeros_like(syn_leaf)
    lr_grad = torch.zeros((), dtype=lr_value.dtype, device=lr_value.device)
    for k in range(len(steps) - 1, -1, -1):
        theta = thetas[k].clone().requires_grad_(True)
        grad = _step_gradient(forward, theta, syn_leaf, labels, steps[k], create_graph=True)
        lr_grad = lr_grad - (grad.detach() * adjoint).sum()
        inner = (grad * adjoint).sum()
        d_theta, d_syn = torch.autograd.grad(inner, (theta, syn_leaf), allow_unused=True)
        if d_syn is not None:
            syn_grad = syn_grad - lr_value * d_syn
        adjoint = adjoint - lr_value * d_theta
        del grad, inner, d_theta, d_syn, theta
        thetas[k + 1] = None  # type: ignore[call-overload]  # no longer needed: free it early
    return WalkResult(float(loss), syn_grad, lr_grad.reshape(lr.shape))
