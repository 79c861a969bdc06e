"""Helpers for the score tests (imported as ``score_helpers``; fixtures stay in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcondense import store
from medcondense.config import ScoreConfig


def write_syn(path: Path, images: np.ndarray, class_names: list[str], kind: str = "synthetic") -> Path:
    """Write ``images`` (one a class, in class order) as a synthetic or subset file."""
    n = images.shape[0]
    store.write(path, store.ImageSet(
        images=images.astype(np.float32), labels=np.arange(n) % len(class_names),
        split=np.zeros(n, np.uint8), class_names=class_names, kind=kind, attrs={"method": "test", "ipc": 1},
    ))
    return path


def quick_config(data: Path, **overrides) -> ScoreConfig:
    """A config that runs in a few seconds on the 16 px blob set."""
    values = dict(data=str(data), ipc=[1], indicator="full", repeats=1, epochs=10, full_steps=20, embed_nets=2, device="cpu")
    values.update(overrides)
    return ScoreConfig(**values)
