"""Factorised files (#17) are read as decoded images by evaluate, score and export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from medcondense import factorised, store
from medcondense.config import ExportConfig


def _factorised_file(tmp_path: Path, blob_set: store.ImageSet, per_class: int = 2) -> tuple[Path, np.ndarray]:
    """A factorised synthetic file of ``per_class`` stored images a class (factor 2), made by
    encoding real train images; returns its path and the decoded images expected."""
    train = blob_set.part(store.SPLIT_TRAIN)
    idx = np.concatenate([np.flatnonzero(train.labels == k)[: 4 * per_class] for k in range(blob_set.num_classes)])
    stored = factorised.encode_tensor(torch.as_tensor(train.images[idx]), 2).numpy()
    labels = np.repeat(np.arange(blob_set.num_classes), per_class)
    syn = store.ImageSet(images=stored, labels=labels, split=np.zeros(labels.size, np.uint8),
                         class_names=list(blob_set.class_names), kind="synthetic",
                         attrs={"method": "idm", "ipc": per_class, "factorised": factorised.describe(2),
                                "normalization": blob_set.attrs.get("normalization")})
    path = tmp_path / "syn_idm.h5"
    store.write(path, syn)
    return path, factorised.decode_array(stored, 2)


def test_evaluate_trains_on_the_decoded_images(tmp_path, blob_set, real_h5):
    from medcondense.evaluate import pipeline
    from medcondense.config import EvaluateConfig
    from medcondense.evaluate.data import load_input, load_real

    path, expected = _factorised_file(tmp_path, blob_set)
    real = load_real(real_h5)
    item = load_input(path, real)
    assert item.ipc == 2 and item.train_x.shape[0] == 4 * 2 * 4  # stored IPC, decoded images
    assert np.bincount(item.train_y).tolist() == [8, 8, 8, 8]
    back = item.train_x.numpy() * real.std.reshape(1, -1, 1, 1) + real.mean.reshape(1, -1, 1, 1)
    assert np.allclose(back, expected, atol=1e-4)
    report = pipeline.run(EvaluateConfig(inputs=[str(path)], real=str(real_h5), models=1, epochs=2, arch="mlp",
                                         device="cpu", baselines=["random"]))
    (result,) = report["results"]
    assert result["ipc"] == 2 and result["train_images"] == 32


def test_export_writes_the_decoded_images(tmp_path, blob_set):
    from medcondense.export import pipeline

    path, expected = _factorised_file(tmp_path, blob_set)
    out = tmp_path / "out"
    pipeline.run(ExportConfig(input=str(path), output=str(out), formats=["npz"]))
    arrays = np.load(out / "npz" / f"{path.stem}.npz")
    assert arrays["train_images"].shape[0] == expected.shape[0]
    assert np.array_equal(arrays["train_labels"].ravel(), np.repeat(np.arange(4), 8))
