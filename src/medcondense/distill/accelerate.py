"""The two speed switches the methods share: bfloat16 autocast and ``torch.compile``.

Neither changes what a method computes. Autocast changes rounding (the matched quantities stay
float32: losses, embeddings' means, gradients of the parameters); compile changes how the
kernels are scheduled (it fuses instance norm, ReLU and pooling into a few loops). What each
gains on which device is measured by ``benchmarks/distill.py`` and
``benchmarks/versus_reference.py`` (docs/distill.md has the numbers).

Only first-order passes go through here. DC's and DSA's synthetic pass needs the gradient of a
gradient (``create_graph=True``); ``torch.compile`` cannot differentiate its own backward twice
and bfloat16 would round the very quantity being matched, so that pass stays eager float32.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


def autocast(device: torch.device, amp: str) -> AbstractContextManager:
    """The autocast context of ``amp`` (``"bf16"``: bfloat16; ``"off"``: none) on ``device``."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


class MaybeCompiled:
    """``fn`` run through ``torch.compile`` when ``enabled``, else called as is.

    The compiler needs a C++ compiler on a CPU and Triton on CUDA; when it is missing or fails
    on a graph, the call is repeated eagerly, one warning says so, and the run goes on eagerly
    (the result is the same up to rounding). Out-of-memory and Ctrl-C pass through untouched.

    ``fn`` takes the network as an argument rather than closing over it, so a fresh network of
    the same shape every iteration reuses the compiled code instead of recompiling. Tensor
    arguments are made contiguous first for the same reason: compiled code is specialized to
    strides, and a flipped or cropped batch would otherwise compile a graph of its own. Batch
    sizes vary (a class smaller than batch_real, the inner loop's synthetic batches): on the
    first change of size torch.compile recompiles with a dynamic batch dimension, which then
    serves every size, so a run compiles a handful of graphs, not one per size.
    """

    def __init__(self, fn: Callable[..., Any], enabled: bool):
        self.fn = fn
        self.compiled: Callable[..., Any] | None = torch.compile(fn) if enabled else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is None:
            return self.fn(*args, **kwargs)
        args = tuple(_canonical_strides(a) if isinstance(a, torch.Tensor) else a for a in args)
        try:
            return self.compiled(*args, **kwargs)
        except (torch.OutOfMemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # the compiler raises many types (missing compiler, lowering errors)
            log.warning(
                "torch.compile failed (%s: %s); continuing without it (--compile off hides this)",
                type(exc).__name__, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "",
            )
            self.compiled = None
            return self.fn(*args, **kwargs)


def _canonical_strides(x: torch.Tensor) -> torch.Tensor:
    """``x`` contiguous with the standard strides, also on size-1 dimensions.

    ``contiguous()`` alone keeps whatever stride a size-1 dimension had (a 1-channel batch that
    went through a permute has channel stride 1, not H*W); compiled code guards on it.
    ``view`` recomputes the strides without copying.
    """
    return x.contiguous().view(x.shape)
