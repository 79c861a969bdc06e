"""Export fixtures: a synthetic CT set with a recorded window, a coreset subset, the CLI runner.

All start from the root conftest's ``blob_set`` (a real 4-class 16 px set) and are written to
real HDF5 files through the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app

SYN_WINDOW = {"center": 40, "width": 400}


def first_per_class(image_set: store.ImageSet, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` train images of every class."""
    train = np.flatnonzero(image_set.split == store.SPLIT_TRAIN)
    return np.concatenate([train[image_set.labels[train] == k][:per_class] for k in range(image_set.num_classes)])


@pytest.fixture
def syn_set(blob_set: store.ImageSet) -> store.ImageSet:
    """A synthetic-looking CT set: 3 images per class, window 40/400 recorded, meta only spacing."""
    part = blob_set.select(first_per_class(blob_set, 3))
    return store.ImageSet(
        images=part.images, labels=part.labels, split=np.zeros(part.n, dtype=np.uint8),
        class_names=list(part.class_names), kind="synthetic",
        meta={"spacing": np.tile(np.array([[0.8, 0.8, 2.5]], dtype=np.float32), (part.n, 1))},
        attrs={
            "modality": "CT", "laterality": True, "method": "dm", "ipc": 3, "source_hash": "ab" * 32,
            "hyperparameters": {"lr_img": 1.0, "iterations": 20},
            "provenance": {"stage": "distill", "tool_version": "0.1.0", "seed": 0},
            "normalization": {"method": "window", "params": {}, "train_mean": [0.4], "train_std": [0.2]},
            "preprocessing": {"size": 16, "window": SYN_WINDOW, "normalization": "window"},
        },
    )


@pytest.fixture
def syn_h5(tmp_path: Path, syn_set: store.ImageSet) -> Path:
    path = tmp_path / "syn.h5"
    store.write(path, syn_set)
    return path


@pytest.fixture
def subset_h5(tmp_path: Path, blob_set: store.ImageSet) -> Path:
    """A herding coreset of real images (kind subset), with the real per-image meta."""
    part = blob_set.select(first_per_class(blob_set, 2))
    part.kind = "subset"
    part.attrs.update(method="herding", ipc=2)
    path = tmp_path / "subset.h5"
    store.write(path, part)
    return path


@pytest.fixture
def cli() -> Callable[..., object]:
    """Run ``medcondense export ARGS...``; returns Click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: object):
        return runner.invoke(app, ["export", *[str(a) for a in args]])

    return invoke


@pytest.fixture(autouse=True)
def _detach_cli_log_handlers():
    """The CLI binds its log handler to the runner's stderr, closed after each invoke: drop it."""
    yield
    import logging

    logging.getLogger("medcondense").handlers.clear()
