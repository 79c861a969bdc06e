"""Helpers for the evaluate tests: a 'synthetic' set cut from the real one, a quick config."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcondense import store
from medcondense.config import EvaluateConfig

REPORT_KEYS = {"real", "protocol", "results", "output", "plot", "run_key", "provenance"}
RESULT_KEYS = {"file", "kind", "method", "ipc", "train_images", "content_hash", "metrics", "baselines", "recovery", "protocol"}


def make_synthetic(real: store.ImageSet, per_class: int, *, method: str = "dm", shuffle_labels: bool = False) -> store.ImageSet:
    """A 'synthetic' set: the first real train images of each class, with no identifying meta."""
    train = real.part(store.SPLIT_TRAIN)
    idx = np.concatenate([np.flatnonzero(train.labels == k)[:per_class] for k in range(real.num_classes)])
    labels = train.labels[idx].copy()
    if shuffle_labels:
        labels = np.random.default_rng(0).permutation(labels)
    return store.ImageSet(
        images=train.images[idx], labels=labels, split=np.zeros(idx.size, np.uint8),
        class_names=list(real.class_names), kind="synthetic", attrs={"method": method, "ipc": per_class},
    )


def evaluate_config(real_h5: Path, *inputs: Path, **options) -> EvaluateConfig:
    defaults = dict(models=2, epochs=6, arch="mlp", device="cpu", baselines=["random", "full"])
    return EvaluateConfig(inputs=[str(p) for p in inputs], real=str(real_h5), **{**defaults, **options})


def rendered(report: dict) -> str:
    """The report as ``render`` prints it on an 80-column console."""
    import io

    from rich.console import Console

    from medcondense.evaluate.report import render

    buffer = io.StringIO()
    render(report, Console(file=buffer, width=80))
    return buffer.getvalue()
