"""A small separable real set, shared by the stage tests (imported as ``blob_data``).

Kept out of conftest.py on purpose: test modules import it by name, and several conftest.py
files in the tree would make ``from conftest import ...`` ambiguous.
"""

from __future__ import annotations

import numpy as np

from medcondense import store


def make_blob_set(
    num_classes: int = 4,
    per_class: tuple[int, int, int] = (24, 4, 8),
    size: int = 16,
    channels: int = 1,
    noise: float = 0.15,
    seed: int = 0,
) -> store.ImageSet:
    """A separable real set: class k is a bright square at its own place, plus noise, in [0, 1].

    ``per_class`` gives the train/val/test counts per class. Patients are one per 4 images, each
    patient in one split only, so the set looks like an ingest output.
    """
    rng = np.random.default_rng(seed)
    images, labels, split, patients = [], [], [], []
    block = size // 2
    for k in range(num_classes):
        for split_code, count in enumerate(per_class):
            for i in range(count):
                img = rng.normal(0.3, noise, (channels, size, size))
                r, c = divmod(k % 4, 2)
                img[:, r * block : (r + 1) * block, c * block : (c + 1) * block] += 0.5 + 0.1 * (k // 4)
                images.append(np.clip(img, 0, 1))
                labels.append(k)
                split.append(split_code)
                patients.append(f"p{k}-{split_code}-{i // 4}")
    images = np.stack(images).astype(np.float32)
    split_arr = np.array(split, dtype=np.uint8)
    train = images[split_arr == store.SPLIT_TRAIN]
    mean = train.mean(axis=(0, 2, 3)).tolist()
    std = train.std(axis=(0, 2, 3)).tolist()
    n = len(labels)
    return store.ImageSet(
        images=images,
        labels=np.array(labels, dtype=np.int64),
        split=split_arr,
        class_names=[f"class{k}" for k in range(num_classes)],
        kind="real",
        meta={
            "source_path": np.array([f"case{i:04d}.dcm" for i in range(n)], dtype=object),
            "series_key": np.array([f"s{p}" for p in patients], dtype=object),
            "patient_key": np.array(patients, dtype=object),
            "slice_index": np.full(n, -1, dtype=np.int32),
            "site": np.array(["siteA" if i % 2 else "siteB" for i in range(n)], dtype=object),
            "spacing": np.ones((n, 3), dtype=np.float32),
        },
        attrs={
            "modality": "MR",
            "laterality": True,
            "normalization": {"method": "window", "params": {}, "train_mean": mean, "train_std": std},
            "preprocessing": {"size": size, "window": "percentile", "normalization": "window"},
            "provenance": {"stage": "test-fixture"},
        },
    )
