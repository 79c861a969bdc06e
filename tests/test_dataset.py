"""open_dataset: our HDF5 as a torch Dataset (lazy h5py per DataLoader worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medcondense import store
from medcondense.errors import ConfigError, StoreError


def test_import_medcondense_loads_no_torch() -> None:
    """open_dataset is a lazy attribute (the in-process tests below import it for real)."""
    code = ("import sys, medcondense\n"
            "assert 'torch' not in sys.modules and 'open_dataset' in medcondense.__all__\n"
            "try:\n    medcondense.no_such_name\nexcept AttributeError:\n    pass\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_two_workers_return_the_tensors_store_read_gives(real_h5: Path) -> None:
    import torch
    from torch.utils.data import DataLoader

    from medcondense import open_dataset

    s = store.read(real_h5)
    for split, code in (("train", store.SPLIT_TRAIN), ("test", store.SPLIT_TEST)):
        ds = open_dataset(real_h5, split=split)
        images, labels = zip(*DataLoader(ds, batch_size=7, num_workers=2))
        part = s.part(code)
        assert torch.equal(torch.cat(images), torch.from_numpy(part.images))
        assert torch.equal(torch.cat(labels), torch.from_numpy(part.labels))
    assert ds.class_names == s.class_names and ds.kind == "real" and ds.attrs["n"] == s.n


def test_standardize_and_transform(real_h5: Path) -> None:
    from medcondense import open_dataset

    s = store.read(real_h5)
    mean, std = s.normalization_stats()
    ds = open_dataset(real_h5, split="all", standardize=True, transform=lambda x: x * 2)
    image, label = ds[3]
    expected = (s.images[3] - mean[:, None, None]) / std[:, None, None] * 2
    assert np.allclose(image.numpy(), expected, atol=1e-6) and label == int(s.labels[3])
    assert len(ds) == s.n
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_altered_file_and_unknown_split_are_refused(real_h5: Path) -> None:
    import h5py

    from medcondense import open_dataset

    with pytest.raises(ConfigError, match="unknown split"):
        open_dataset(real_h5, split="training")
    with h5py.File(real_h5, "r+") as f:
        f["images"][0, 0, 0, 0] += 1.0
    with pytest.raises(StoreError, match="content hash"):
        open_dataset(real_h5)


def test_streaming_hash_equals_the_in_memory_hash(real_h5: Path) -> None:
    digest, stored = store.file_content_hash(real_h5, chunk=5)
    assert digest == stored == store.content_hash(store.read(real_h5))
