"""Dataset Condensation with gradient matching (DC; Zhao, Mopuri & Bilen, ICLR 2021).

Per outer iteration a fresh ConvNet; ``outer_loop`` times: for every class, the gradient of the
cross-entropy on a real batch and on the synthetic images of that class are compared layer by
layer with the reference's ``'ours'`` distance, the images take one SGD step on the summed
distance, and (except after the last step) the network trains ``inner_loop`` epochs on the
current synthetic set. The outer/inner loop counts come from the reference's table by IPC.

Speed: the real-gradient pass and the inner loop are first-order and may run under bfloat16
autocast and ``torch.compile`` (``hp.amp``, ``hp.compile``; see ``accelerate.py``); the
synthetic pass, differentiated twice, is always eager float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from medcondense.distill.accelerate import MaybeCompiled, autocast
from medcondense.config import DistillConfig
from medcondense.distill.base import Augmenter, Hyperparameters, Method

log = logging.getLogger(__name__)

#: reference (main.py) outer_loop, inner_loop by images per class
LOOP_TABLE: dict[int, tuple[int, int]] = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loops_for_ipc(ipc: int) -> tuple[int, int]:
    """The reference's (outer_loop, inner_loop) for ``ipc``; other IPCs take the nearest entry (warned)."""
    if ipc in LOOP_TABLE:
        return LOOP_TABLE[ipc]
    nearest = min(LOOP_TABLE, key=lambda k: (abs(k - ipc), k))
    log.warning(
        "IPC %d is not in the reference loop table (1, 10, 20, 30, 40, 50); using IPC %d's "
        "outer/inner loops %s (set --outer-loop/--inner-loop to choose)", ipc, nearest, LOOP_TABLE[nearest],
    )
    return LOOP_TABLE[nearest]


def gradient_distance(grads_syn: Sequence[torch.Tensor], grads_real: Sequence[torch.Tensor]) -> torch.Tensor:
    """The reference's layer-wise gradient-matching distance (``match_loss``, dis_metric ``'ours'``).

    Each gradient is viewed as rows of one output node: a conv weight ``[out, in, h, w]`` as
    ``[out, in*h*w]``, a 3-D tensor ``[d0, d1, d2]`` as ``[d0, d1*d2]``, a linear weight as is.
    Per row the distance is ``1 - cos`` (with 1e-6 added to the norm product) and rows and
    layers are summed. 1-D gradients (biases, norm scales) contribute nothing, as in the reference.
    """
    total = grads_syn[0].new_zeros(())
    for g_syn, g_real in zip(grads_syn, grads_real):
        if g_syn.dim() <= 1:
            continue  # the reference's "do nothing" branch for biases and norm parameters
        a = g_syn.reshape(g_syn.shape[0], -1)
        b = g_real.reshape(g_real.shape[0], -1)
        cos = (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


@dataclass
class _NetState:
    net: nn.Module
    matched: list[nn.Parameter]
    optimizer: torch.optim.Optimizer


class DCMethod(Method):
    """Gradient matching; :class:`~medcondense.distill.dsa.DSAMethod` adds Siamese augmentation."""

    name = "dc"
    default_lr_img = 0.1
    preset_iterations = {"quick": 10, "paper": 1000}
    preset_batch_real = {"quick": 64, "paper": 256}
    uses_loops = True
    supports_class_shards = True  # per-class loss; the network from the seeded global RNG

    @classmethod
    def refine(cls, hp: Hyperparameters, config: DistillConfig, device: torch.device) -> Hyperparameters:
        """Outer/inner loops: ``--outer-loop``/``--inner-loop``, else the reference's table by IPC."""
        table_outer, table_inner = (0, 0)
        if config.outer_loop is None or config.inner_loop is None:
            table_outer, table_inner = loops_for_ipc(config.ipc)
        hp.outer_loop = config.outer_loop if config.outer_loop is not None else table_outer
        hp.inner_loop = config.inner_loop if config.inner_loop is not None else table_inner
        return hp

    def __init__(self, hp: Hyperparameters, spec, device: torch.device):
        super().__init__(hp, spec, device)
        self.criterion = nn.CrossEntropyLoss()
        self.augmenter = Augmenter(hp.aug, device)
        # The first-order passes (real gradients, inner-loop training) may use bf16 and compile;
        # the synthetic pass below is differentiated twice and stays eager float32.
        self._first_order_loss = MaybeCompiled(self._cross_entropy, hp.compile)

    def _cross_entropy(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.hp.amp):
            logits = net(x)
        return self.criterion(logits.float(), y)

    @property
    def updates_per_iteration(self) -> int:
        return self.hp.outer_loop

    def begin_iteration(self, generator: torch.Generator | None = None) -> _NetState:
        net = self.build_net()
        net.train()
        # 1-D parameters add nothing to the distance: asking for their gradients is wasted work.
        matched = [p for p in net.parameters() if p.dim() > 1]
        return _NetState(net, matched, torch.optim.SGD(net.parameters(), lr=self.hp.lr_net))

    def _class_loss(self, state: _NetState, real: torch.Tensor, syn: torch.Tensor, c: int, params: Any) -> torch.Tensor:
        real = Augmenter.apply(real, params)
        syn = Augmenter.apply(syn, params)
        y_real = torch.full((real.shape[0],), c, dtype=torch.long, device=real.device)
        y_syn = torch.full((syn.shape[0],), c, dtype=torch.long, device=syn.device)
        loss_real = self._first_order_loss(state.net, real, y_real)
        g_real = [g.detach() for g in torch.autograd.grad(loss_real, state.matched)]
        loss_syn = self.criterion(state.net(syn), y_syn)
        g_syn = torch.autograd.grad(loss_syn, state.matched, create_graph=True)
        return gradient_distance(g_syn, g_real)

    def loss(self, state: _NetState, real: list[torch.Tensor], syn: list[torch.Tensor], aug: list[Any]) -> torch.Tensor:
        total = syn[0].new_zeros(())
        for c, r, s, p in zip(self.classes, real, syn, aug):
            total = total + self._class_loss(state, r, s, c, p)
        return total

    def between_updates(self, state: _NetState, syn_images: torch.Tensor, syn_labels: torch.Tensor, generator: torch.Generator) -> None:
        """Train the network ``inner_loop`` epochs on the synthetic set (augmented for DSA)."""
        n = syn_images.shape[0]
        for _ in range(self.hp.inner_loop):
            order = torch.randperm(n, generator=generator).to(syn_images.device)
            for start in range(0, n, self.hp.batch_train):
                idx = order[start : start + self.hp.batch_train]
                # not Siamese here: the reference draws one parameter per image (DiffAugment seed -1)
                x = Augmenter.apply(syn_images[idx], self.augmenter.sample(generator, per_sample=len(idx)))
                loss = self._first_order_loss(state.net, x, syn_labels[idx])
                state.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                state.optimizer.step()
