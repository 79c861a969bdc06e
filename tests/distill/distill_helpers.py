"""Helpers for the distill engine tests: a tiny real file and a fast config."""

from __future__ import annotations

from pathlib import Path

from medcondense import store
from medcondense.config import DistillConfig

# Small enough for a handful of iterations in well under a second each on 2 CPU cores.
FAST = dict(ipc=2, iterations=4, batch_real=8, outer_loop=2, inner_loop=1, device="cpu", checkpoint_every=2)


def write_blob(path: Path, **kwargs) -> Path:
    """A ``make_blob_set`` set (4 classes, 16 px unless overridden) written to ``path``."""
    from blob_data import make_blob_set

    store.write(path, make_blob_set(**kwargs))
    return path


def fast_config(data: Path, output: Path, method: str = "dm", **overrides) -> DistillConfig:
    """A DistillConfig for the tiny set that runs in about a second."""
    values = {**FAST, **overrides}
    return DistillConfig(input=str(data), output=str(output), method=method, **values)
