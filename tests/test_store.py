"""The HDF5 contract: round trip, atomic writes, validation messages, content hash."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from medcondense import store
from medcondense.atomic import temporaries_for
from medcondense.errors import ConfigError, StoreError


def test_round_trip_keeps_arrays_meta_and_attrs(tmp_path: Path, blob_set: store.ImageSet) -> None:
    path = tmp_path / "a.h5"
    digest = store.write(path, blob_set)
    back = store.read(path)
    np.testing.assert_array_equal(back.images, blob_set.images)
    np.testing.assert_array_equal(back.labels, blob_set.labels)
    np.testing.assert_array_equal(back.split, blob_set.split)
    assert back.class_names == blob_set.class_names
    assert back.kind == "real"
    assert list(back.meta["patient_key"]) == list(blob_set.meta["patient_key"])
    assert back.attrs["normalization"] == blob_set.attrs["normalization"]
    assert back.attrs["laterality"] is True
    assert back.attrs["content_hash"] == digest == store.content_hash(back)


def test_layout_matches_format_doc(real_h5: Path) -> None:
    with h5py.File(real_h5, "r") as f:
        assert f.attrs["schema"] == store.SCHEMA
        assert f["images"].dtype == np.float32 and f["images"].ndim == 4
        assert f["images"].chunks == (1, *f["images"].shape[1:])
        assert f["images"].compression == "gzip" and f["images"].shuffle
        assert f["images"].compression_opts == store.GZIP_LEVEL == 1  # level 4 cost 30 % more CPU (docs/results.md)
        assert f["labels"].dtype == np.int64 and f["split"].dtype == np.uint8
        assert f["meta/spacing"].shape == (f["images"].shape[0], 3)
        assert json.loads(f.attrs["class_names"]) == ["class0", "class1", "class2", "class3"]


def test_same_content_gives_same_hash_and_arrays(tmp_path: Path, blob_set: store.ImageSet) -> None:
    a = store.write(tmp_path / "a.h5", blob_set)
    b = store.write(tmp_path / "b.h5", dataclasses.replace(blob_set, attrs={**blob_set.attrs, "provenance": {"x": 1}}))
    assert a == b  # provenance is not content


def test_write_refuses_existing_file_without_overwrite(real_h5: Path, blob_set: store.ImageSet) -> None:
    with pytest.raises(ConfigError, match="--overwrite"):
        store.write(real_h5, blob_set)
    store.write(real_h5, blob_set, overwrite=True)


def test_interrupted_write_leaves_no_file(tmp_path: Path, blob_set: store.ImageSet, monkeypatch) -> None:
    path = tmp_path / "out.h5"

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "_write_arrays", explode)
    with pytest.raises(KeyboardInterrupt):
        store.write(path, blob_set)
    assert not path.exists()
    assert not temporaries_for(path)


def test_failed_overwrite_keeps_the_old_file(real_h5: Path, blob_set: store.ImageSet, monkeypatch) -> None:
    before = store.read(real_h5).attrs["content_hash"]
    monkeypatch.setattr(store, "_write_arrays", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        store.write(real_h5, dataclasses.replace(blob_set, images=blob_set.images * 0), overwrite=True)
    assert store.read(real_h5).attrs["content_hash"] == before


def test_synthetic_set_with_patient_keys_is_refused(tmp_path: Path, blob_set: store.ImageSet) -> None:
    leaky = dataclasses.replace(blob_set, kind="synthetic")
    with pytest.raises(StoreError, match="patient_key"):
        store.write(tmp_path / "syn.h5", leaky)
    assert not (tmp_path / "syn.h5").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: dataclasses.replace(s, labels=s.labels + 10), "labels must lie"),
        (lambda s: dataclasses.replace(s, split=s.split + 5), "split holds codes"),
        (lambda s: dataclasses.replace(s, kind="fake"), "kind 'fake'"),
        (lambda s: dataclasses.replace(s, labels=s.labels[:-1]), "labels: expected shape"),
        (lambda s: dataclasses.replace(s, images=s.images[:, 0]), r"\[N, C, H, W\]"),
    ],
)
def test_inconsistent_sets_are_refused(tmp_path: Path, blob_set, change, message) -> None:
    with pytest.raises(StoreError, match=message):
        store.write(tmp_path / "bad.h5", change(blob_set))


def test_validate_names_a_file_that_is_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "notes.h5"
    path.write_text("hello")
    with pytest.raises(StoreError, match="not an HDF5 file") as info:
        store.validate(path)
    assert str(path) in str(info.value)


def test_validate_names_a_foreign_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(StoreError, match="not a medcondense file"):
        store.validate(path)


def test_validate_refuses_a_newer_schema(real_h5: Path) -> None:
    with h5py.File(real_h5, "a") as f:
        f.attrs["schema"] = "medcondense/99"
    with pytest.raises(StoreError, match="newer medcondense"):
        store.validate(real_h5)


def test_validate_detects_altered_content(real_h5: Path) -> None:
    with h5py.File(real_h5, "a") as f:
        f["images"][0] = f["images"][0] + 1.0
    with pytest.raises(StoreError, match="content hash"):
        store.validate(real_h5)


def test_validate_detects_missing_dataset_and_nan(real_h5: Path, tmp_path: Path, blob_set) -> None:
    with h5py.File(real_h5, "a") as f:
        del f["split"]
    with pytest.raises(StoreError, match="missing split"):
        store.validate(real_h5)
    # #18: store.write now refuses NaN images, so the NaN is put into a written file by h5py
    nan_path = tmp_path / "nan.h5"
    store.write(nan_path, blob_set)
    with h5py.File(nan_path, "a") as f:
        f["images"][0, 0, 0, 0] = np.nan
    with pytest.raises(StoreError, match="NaN"):
        store.read(nan_path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        store.read(tmp_path / "absent.h5")
    with pytest.raises(StoreError, match="folder"):
        store.read(tmp_path)


def test_read_attrs_does_not_need_images(real_h5: Path) -> None:
    attrs = store.read_attrs(real_h5)
    assert attrs["n"] == 4 * 36 and attrs["image_shape"] == [1, 16, 16]
    assert attrs["kind"] == "real"


def test_part_and_normalization_stats(blob_set: store.ImageSet) -> None:
    train = blob_set.part(store.SPLIT_TRAIN)
    assert train.n == 4 * 24 and set(train.split) == {0}
    mean, std = blob_set.normalization_stats()
    np.testing.assert_allclose(mean, train.images.mean(axis=(0, 2, 3)), rtol=1e-5)
    assert std.shape == (1,) and (std > 0).all()


def test_direct_chunks_decode_as_hdf5_filters_and_equal_the_h5py_path(tmp_path: Path, blob_set: store.ImageSet) -> None:
    """/images chunks are shuffled and deflated here (ISA-L) and stored with write_direct_chunk:
    each chunk must be the zlib stream of the shuffled image HDF5's filters read, and a file
    written without isal (h5py's own filter pipeline, in a subprocess with the module hidden)
    must hold the same arrays and content hash."""
    import subprocess
    import sys
    import zlib

    assert store._fast_deflate() is not None  # isal is a dependency; the fallback is for odd platforms
    fast = tmp_path / "fast.h5"
    digest = store.write(fast, blob_set)
    with h5py.File(fast, "r") as f:
        dataset = f["images"]
        assert dataset.compression == "gzip" and dataset.shuffle and dataset.chunks == (1, *blob_set.images.shape[1:])
        mask, raw = dataset.id.read_direct_chunk((2, 0, 0, 0))
        planes = np.frombuffer(zlib.decompress(raw), dtype=np.uint8).reshape(4, -1)
        assert mask == 0 and np.array_equal(planes.T.copy().view("<f4").reshape(blob_set.images.shape[1:]),
                                            blob_set.images[2])
    slow = tmp_path / "slow.h5"
    code = ("import sys; sys.modules['isal'] = None\n"
            "from medcondense import store\n"
            "assert store._fast_deflate() is None\n"
            f"store.write({str(slow)!r}, store.read({str(fast)!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    a, b = store.read(fast), store.read(slow)
    assert np.array_equal(a.images, b.images) and a.attrs["content_hash"] == b.attrs["content_hash"] == digest
