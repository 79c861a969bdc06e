"""Dataset Condensation with Distribution Matching (DM; Zhao & Bilen, WACV 2023).

Per iteration a freshly initialized ConvNet that is never trained (its parameters frozen); for
every class, the mean embedding of an augmented real batch and of the synthetic images of that
class (augmented with the *same* parameters) are compared with the squared Euclidean distance,
summed over classes. Reference defaults: lr_img 1.0, batch_real 256, 20000 iterations.

Speed: with ``batch_classes`` all classes go through the network in one pass (real images in
one, synthetic in another) instead of one pass per class; with ``amp="bf16"`` the network runs
under bfloat16 autocast; with ``compile`` the embedding goes through ``torch.compile``. None
changes the method, only rounding; which is faster depends on the device (see
benchmarks/distill.py and benchmarks/versus_reference.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medcondense.distill.accelerate import MaybeCompiled, autocast
from medcondense.config import DistillConfig
from medcondense.distill.base import Augmenter, DataSpec, Hyperparameters, Method


class DMMethod(Method):
    """Mean-embedding matching per class in random networks."""

    name = "dm"
    default_lr_img = 1.0
    preset_iterations = {"quick": 200, "paper": 20000}
    preset_batch_real = {"quick": 64, "paper": 256}
    uses_augmentation = True
    supports_class_shards = True  # per-class loss; the network from the seeded global RNG

    @classmethod
    def refine(cls, hp: Hyperparameters, config: DistillConfig, device: torch.device) -> Hyperparameters:
        """Batched classes: ``--batch-classes on``, or ``auto`` on CUDA.

        Faster on GPUs; on the CPU one class at a time measured faster (DM IPC 50, 2 cores:
        0.87 s per iteration against 1.66 s batched, bf16 + compile).
        """
        hp.batch_classes = config.batch_classes == "on" or (config.batch_classes == "auto" and device.type == "cuda")
        return hp

    def __init__(self, hp: Hyperparameters, spec: DataSpec, device: torch.device):
        super().__init__(hp, spec, device)
        self._embed = MaybeCompiled(self._float_embedding, hp.compile)

    def _float_embedding(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.hp.amp):
            return net.embed(x).float()

    def begin_iteration(self, generator: torch.Generator | None = None) -> nn.Module:
        net = self.build_net()
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)  # DM never trains the network: gradients only flow to the images
        return net

    def loss(self, net: nn.Module, real: list[torch.Tensor], syn: list[torch.Tensor], aug: list[Any]) -> torch.Tensor:
        real = [Augmenter.apply(r, p) for r, p in zip(real, aug)]
        syn = [Augmenter.apply(s, p) for s, p in zip(syn, aug)]
        if self.hp.batch_classes:
            mean_real, mean_syn = self._means_batched(net, real, syn)
        else:
            mean_real, mean_syn = self._means_per_class(net, real, syn)
        return ((mean_real - mean_syn) ** 2).sum()

    def _means_per_class(self, net: nn.Module, real: list[torch.Tensor], syn: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class mean embeddings [K, D], one network pass per class and kind (the reference's order)."""
        with torch.no_grad():
            mean_real = torch.stack([self._embed(net, r).mean(dim=0) for r in real])
        mean_syn = torch.stack([self._embed(net, s).mean(dim=0) for s in syn])
        return mean_real, mean_syn

    def _means_batched(self, net: nn.Module, real: list[torch.Tensor], syn: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class mean embeddings [K, D] from one pass over all real and one over all synthetic images.

        Instance norm works per image, so batching classes does not change any embedding.
        """
        with torch.no_grad():
            emb_real = self._embed(net, torch.cat(real))
        emb_syn = self._embed(net, torch.cat(syn))
        mean_real = torch.stack([e.mean(dim=0) for e in emb_real.split([r.shape[0] for r in real])])
        mean_syn = torch.stack([e.mean(dim=0) for e in emb_syn.split([s.shape[0] for s in syn])])
        return mean_real, mean_syn
