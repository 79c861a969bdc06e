"""NIfTI, npz, PNG and the intensity inversion: read back with nibabel, numpy and Pillow."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medcondense import store
from medcondense.config import ExportConfig
from medcondense.export import pipeline
from medcondense.export.context import ExportContext
from medcondense.export.intensity import intensity_map
from medcondense.export.nifti import image_from_nifti_data, nifti_data_from_images


def export(path: Path, out: Path, formats: list[str], **options) -> Path:
    pipeline.run(ExportConfig(input=str(path), output=str(out), formats=formats, **options))
    return out


def names(image_set: store.ImageSet) -> list[str]:
    return ExportContext(image_set, "x.h5", "0" * 64).image_names()


# ----------------------------------------------------------------------------- NIfTI


def test_nifti_per_image_holds_modality_values_and_spacing(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    out = export(syn_h5, tmp_path / "out", ["nifti"])
    hu = intensity_map(syn_set.attrs, 1).to_modality(syn_set.images).astype(np.float32)
    for i, (name, label) in enumerate(zip(names(syn_set), syn_set.labels)):
        img = nib.load(out / "nifti" / syn_set.class_names[label] / f"{name}.nii.gz")
        assert img.shape == (16, 16, 1)
        np.testing.assert_array_equal(image_from_nifti_data(np.asanyarray(img.dataobj))[0], hu[i])
        np.testing.assert_allclose(np.diag(img.affine)[:3], (0.8, 0.8, 2.5))
        assert (float(img.header["cal_min"]), float(img.header["cal_max"])) == (-160.0, 240.0)


def test_nifti_stack_per_class(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    out = export(syn_h5, tmp_path / "out", ["nifti"], stack=True)
    hu = intensity_map(syn_set.attrs, 1).to_modality(syn_set.images).astype(np.float32)
    for k, name in enumerate(syn_set.class_names):
        data = np.asanyarray(nib.load(out / "nifti" / f"{name}.nii.gz").dataobj)
        assert data.shape == (16, 16, 3)
        np.testing.assert_array_equal(image_from_nifti_data(data), hu[syn_set.labels == k])


def test_nifti_layout_puts_row_zero_at_the_top() -> None:
    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # K, C, H, W
    data = nifti_data_from_images(image)
    assert data.shape == (5, 4, 2, 3)
    assert data[0, 3, 0, 0] == image[0, 0, 0, 0]  # top-left pixel has the highest j (superior)
    np.testing.assert_array_equal(image_from_nifti_data(data), image)


# ----------------------------------------------------------------------------- npz


def test_npz_has_medmnist_keys_shapes_and_dtypes(real_h5: Path, blob_set, tmp_path: Path) -> None:
    out = export(real_h5, tmp_path / "out", ["npz"])
    with np.load(out / "npz" / "data.npz") as npz:
        assert sorted(npz.files) == sorted(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))
        for code, split in store.SPLIT_NAMES.items():
            mask = blob_set.split == code
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
            assert images.dtype == np.uint8 and images.shape == (mask.sum(), 16, 16)
            assert labels.dtype == np.uint8 and labels.shape == (mask.sum(), 1)
            np.testing.assert_array_equal(labels[:, 0], blob_set.labels[mask])
            # the fixture's images are window fractions in [0, 1]: uint8 within half a grey step
            assert np.abs(images / 255.0 - blob_set.images[mask, 0]).max() <= 0.5 / 255 + 1e-6


def test_npz_rgb_is_channels_last(blob_set, tmp_path: Path) -> None:
    rgb = blob_set.select(np.arange(12))
    rgb.images = np.repeat(rgb.images, 3, axis=1)
    store.write(tmp_path / "rgb.h5", rgb)
    out = export(tmp_path / "rgb.h5", tmp_path / "out", ["npz"])
    with np.load(out / "npz" / "rgb.npz") as npz:
        assert npz["train_images"].shape[1:] == (16, 16, 3)


def test_npz_empty_splits_keep_their_image_shape(syn_h5: Path, tmp_path: Path) -> None:
    with np.load(export(syn_h5, tmp_path / "out", ["npz"]) / "npz" / "syn.npz") as npz:
        assert npz["val_images"].shape == (0, 16, 16) and npz["test_labels"].shape == (0, 1)
        assert npz["train_images"].shape == (12, 16, 16)


# ----------------------------------------------------------------------------- PNG


def test_png_per_image_and_grid(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    from PIL import Image

    out = export(syn_h5, tmp_path / "out", ["png"])
    for i, (name, label) in enumerate(zip(names(syn_set), syn_set.labels)):
        pixels = np.asarray(Image.open(out / "png" / syn_set.class_names[label] / f"{name}.png"))
        assert pixels.dtype == np.uint8 and pixels.shape == (16, 16)
        assert np.abs(pixels / 255.0 - np.clip(syn_set.images[i, 0], 0, 1)).max() <= 0.5 / 255 + 1e-6
    grid = Image.open(out / "grid.png")  # beside png/, not inside it (#16)
    assert grid.size[0] > 100 and grid.size[1] > 100


# ----------------------------------------------------------------------------- intensity


def test_zscore_with_recorded_stats_is_inverted() -> None:
    attrs = {"preprocessing": {"window": "none"}, "normalization": {"method": "zscore", "params": {"mean": [100.0], "std": [50.0]}}}
    imap = intensity_map(attrs, 1)
    assert imap.known
    np.testing.assert_allclose(imap.to_modality(np.array([[[[0.0, 1.0, -2.0]]]])), [[[[100.0, 150.0, 0.0]]]])


def test_ct_normalization_from_ingest_keys() -> None:
    attrs = {"preprocessing": {"window": "none (for --normalize ct)", "normalization": "ct"},
             "normalization": {"method": "ct", "params": {"clip_low": [-1000.0], "clip_high": [1500.0], "mean": [40.0], "std": [300.0]}}}
    imap = intensity_map(attrs, 1)
    assert imap.known and imap.window is None
    assert imap.to_modality(np.array([[[[1.0]]]])).item() == pytest.approx(340.0)


@pytest.mark.parametrize("window, pair", [("brain", (40.0, 80.0)), ("40/400", (40.0, 400.0)),
                                          ({"center": 50, "width": 350}, (50.0, 350.0))])
def test_recorded_windows_are_read(window, pair) -> None:
    imap = intensity_map({"preprocessing": {"window": window}}, 1)
    assert imap.window == pair
    lo = pair[0] - pair[1] / 2
    assert imap.to_modality(np.array([[[[0.0, 1.0]]]])).ravel().tolist() == pytest.approx([lo, lo + pair[1]])


@pytest.mark.parametrize("window", ["percentile", "auto", "voi", None])
def test_per_series_or_missing_windows_are_unknown(window) -> None:
    imap = intensity_map({"preprocessing": {"window": window}} if window else {}, 1)
    assert not imap.known
    np.testing.assert_array_equal(imap.to_modality(np.array([[[[0.25]]]])), [[[[0.25]]]])


def test_zscore_without_stats_falls_back_to_stored_values() -> None:
    imap = intensity_map({"preprocessing": {"window": "40/400"}, "normalization": {"method": "zscore"}}, 1)
    assert not imap.known and "without recorded statistics" in imap.description
