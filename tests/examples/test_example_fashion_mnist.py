"""examples/fashion_mnist.py: the idx reader and a small converted file."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(">u1").tobytes())


def test_read_idx_round_trip(fashion_mnist: ModuleType, tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte.gz", array)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "a-idx3-ubyte.gz"), array)


def test_read_idx_rejects_wrong_magic(fashion_mnist: ModuleType, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    with pytest.raises(fashion_mnist.IdxFormatError, match="magic number"):
        fashion_mnist.read_idx(bad)
    unknown = tmp_path / "unknown.gz"
    with gzip.open(unknown, "wb") as f:
        f.write(bytes([0, 0, 0x42, 1]) + np.asarray([1], ">u4").tobytes() + b"\0")
    with pytest.raises(fashion_mnist.IdxFormatError, match="type code"):
        fashion_mnist.read_idx(unknown)
    short = tmp_path / "short.gz"
    write_idx(short, np.zeros((4, 2), np.uint8))
    raw = gzip.open(short).read()
    with gzip.open(short, "wb") as f:
        f.write(raw[:-3])
    with pytest.raises(fashion_mnist.IdxFormatError, match="truncated"):
        fashion_mnist.read_idx(short)


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_small_conversion(fashion_mnist: ModuleType, tmp_path: Path) -> None:
    from medcondense.store import read, validate

    out = tmp_path / "fmnist.h5"
    assert fashion_mnist.main(["-o", str(out), "--limit-train", "24", "--limit-test", "5"]) == 0
    attrs = validate(out)
    assert attrs["modality"] == "OT" and attrs["laterality"] is False and attrs["kind"] == "real"
    assert attrs["image_shape"] == [1, 28, 28]
    assert attrs["class_names"][0] == "T-shirt/top" and len(attrs["class_names"]) == 10
    image_set = read(out)
    counts = np.bincount(image_set.split, minlength=3).tolist()
    assert counts == [240 - 20, 20, 50]  # val is 1/12 of the kept train images, as 5k of 60k
    assert np.bincount(image_set.labels[image_set.split == 2]).tolist() == [5] * 10
    assert 0.0 <= image_set.images.min() and image_set.images.max() <= 1.0
    train = image_set.images[image_set.split == 0]
    assert attrs["normalization"]["train_std"][0] == pytest.approx(float(train.std()), abs=1e-5)
    assert fashion_mnist.main(["-o", str(out)]) == 2  # exists, no --overwrite
