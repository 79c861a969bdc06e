"""examples/brain_patches.py: a tiny aal10 task in every format, the split rule, the writers."""

from __future__ import annotations

import csv
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

TRAIN, VAL, TEST = 6, 1, 2


@pytest.fixture(scope="module")
def patches(brain_patches: ModuleType):
    return brain_patches.build_patches("aal10", train_per_class=TRAIN, test_per_class=TEST, val_per_class=VAL, seed=0)


@pytest.fixture(scope="module")
def built(brain_patches: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("aal10")
    summary = brain_patches.build_task(
        "aal10", out, "dicom,nifti,h5", TRAIN, TEST, 0, val_per_class=VAL
    )
    return summary, out


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["path", "label", "patient", "split"]
        return list(reader)


def test_default_task_runs_from_shipped_data(brain_patches: ModuleType) -> None:
    spec = brain_patches.TASKS["aal10"]
    for name in (spec.t1, spec.atlas, spec.label_table):
        assert (brain_patches.SHIPPED_DIR / name).is_file(), name
    assert len(brain_patches.TASKS) >= 8


def test_summary_counts(built: tuple[dict, Path]) -> None:
    summary, _ = built
    assert len(summary["classes"]) == 10
    for counts in summary["classes"].values():
        assert counts == {"train": TRAIN, "val": VAL, "test": TEST}
    assert summary["n_images"] == 10 * (TRAIN + VAL + TEST)


def test_dicom_tree(built: tuple[dict, Path]) -> None:
    import pydicom

    _, out = built
    root = out / "dicom"
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(class_dirs) == 10
    sop_uids = set()
    for class_dir in class_dirs:
        files = sorted(class_dir.glob("patch_*.dcm"))
        assert len(files) == TRAIN + VAL + TEST
        for path in files[:3] + files[-1:]:
            ds = pydicom.dcmread(path)
            assert ds.Modality == "MR" and ds.PatientID == "CH2-SUBJ01"
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert (ds.Rows, ds.Columns) == (64, 64) and ds.BitsAllocated == 16
            assert ds.PhotometricInterpretation == "MONOCHROME2"
            assert [float(v) for v in ds.PixelSpacing] == [1.0, 1.0]
            assert ds.SeriesDescription.startswith(class_dir.name)
            sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == 10 * 4


def test_dicom_rescale_recovers_nifti_values(built: tuple[dict, Path]) -> None:
    import nibabel as nib
    import pydicom

    _, out = built
    rows = read_manifest(out / "dicom" / "manifest.csv")
    for row in rows[::17]:
        ds = pydicom.dcmread(out / "dicom" / row["path"])
        recovered = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        nifti = nib.load(out / "nifti" / row["path"].replace(".dcm", ".nii.gz"))
        assert nifti.shape == (64, 64, 1) and nifti.get_data_dtype() == np.float32
        assert np.abs(recovered - nifti.get_fdata()[:, :, 0]).max() <= float(ds.RescaleSlope)


@pytest.mark.parametrize("fmt", ["dicom", "nifti"])
def test_manifest(built: tuple[dict, Path], fmt: str) -> None:
    _, out = built
    rows = read_manifest(out / fmt / "manifest.csv")
    assert len(rows) == 10 * (TRAIN + VAL + TEST)
    for row in rows:
        assert (out / fmt / row["path"]).is_file()
        assert row["path"].split("/")[0] == row["label"]
        assert row["patient"] == {"train": "ch2-left", "val": "ch2-left-val", "test": "ch2-right"}[row["split"]]
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_hemisphere_split(patches) -> None:
    left = patches.split != "test"
    assert (patches.centres[left, 0] < 0).all()
    assert (patches.centres[~left, 0] > 0).all()
    assert (patches.hemisphere[left] == "left").all() and (patches.hemisphere[~left] == "right").all()


def test_test_patches_are_mirrored(brain_patches: ModuleType, patches) -> None:
    t1 = brain_patches.load_volume(brain_patches.resolve_file("ch2.nii.gz"))
    # ch2's grid is symmetric about x = 0 (x = i - 90), so flipping axis 0 mirrors the brain.
    assert np.allclose(brain_patches.voxel_to_world(t1, np.array([[90.0, 0, 0]]))[0, 0], 0)
    flipped = brain_patches.Volume(t1.data[::-1].copy(), t1.affine, t1.path)
    test = np.flatnonzero(patches.split == "test")
    mirrored_centres = patches.centres[test] * np.array([-1.0, 1.0, 1.0])
    expected = brain_patches.extract_patches(flipped, mirrored_centres, "left", 64, 1.0, patches.background)
    np.testing.assert_allclose(patches.images[test], expected, atol=1e-4)


def test_no_patch_shows_the_other_hemisphere(brain_patches: ModuleType, patches) -> None:
    for hemisphere in ("left", "right"):
        chosen = patches.hemisphere == hemisphere
        grid = brain_patches.patch_world_grid(patches.centres[chosen], hemisphere, 64, 1.0)
        across = grid[..., 0] >= 0 if hemisphere == "left" else grid[..., 0] <= 0
        assert (patches.images[chosen][across] == patches.background).all()


def test_reject_policy_keeps_patches_off_the_midline(brain_patches: ModuleType) -> None:
    rejected = brain_patches.build_patches("aal10", train_per_class=3, test_per_class=2, val_per_class=1,
                                           seed=1, midline="reject")
    half = 64 // 2
    left = rejected.hemisphere == "left"
    assert (rejected.centres[left, 0] + (half - 1) < 0).all()
    assert (rejected.centres[~left, 0] - (half - 1) > 0).all()


def test_seeded_and_deterministic(brain_patches: ModuleType, patches) -> None:
    again = brain_patches.build_patches("aal10", train_per_class=TRAIN, test_per_class=TEST, val_per_class=VAL, seed=0)
    np.testing.assert_array_equal(again.images, patches.images)
    np.testing.assert_array_equal(again.centres, patches.centres)


def test_h5_output(built: tuple[dict, Path]) -> None:
    from medcondense.store import read, validate

    summary, out = built
    attrs = validate(summary["outputs"]["h5"])
    assert attrs["modality"] == "MR" and attrs["laterality"] is True and attrs["kind"] == "real"
    assert attrs["image_shape"] == [1, 32, 32]
    assert attrs["normalization"]["method"] == "window"
    assert attrs["class_names"] == sorted(attrs["class_names"])
    image_set = read(out / "data.h5")
    assert 0.0 <= image_set.images.min() and image_set.images.max() <= 1.0
    assert np.bincount(image_set.split, minlength=3).tolist() == [10 * TRAIN, 10 * VAL, 10 * TEST]
    train = image_set.images[image_set.split == 0]
    assert attrs["normalization"]["train_mean"][0] == pytest.approx(float(train.mean()), abs=1e-5)
    keys = set(zip(image_set.split.tolist(), image_set.meta["patient_key"].tolist()))
    assert keys == {(0, "ch2-left"), (1, "ch2-left-val"), (2, "ch2-right")}
    assert image_set.meta["source_path"][0].startswith("aal10/")


def test_missing_files_name_the_debian_package(brain_patches: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(brain_patches.MissingTemplateError, match="mricron-data"):
        brain_patches.build_patches("brodmann", train_per_class=1, test_per_class=1, templates_dir=tmp_path)


def test_groupings(brain_patches: ModuleType) -> None:
    table = brain_patches.read_label_table(brain_patches.SHIPPED_DIR / "aal.nii.txt")
    groups = brain_patches.aal10_grouping(table)
    assert len(groups) == 10
    assert sorted(i for ids in groups.values() for i in ids) == sorted(table)  # every AAL region used once
    assert set(brain_patches.aal_lobes4_grouping(table)) == {"frontal", "parietal", "temporal", "occipital"}
    assert len(brain_patches.inia19_grouping({1: "a", 2: "b", 1001: "a'", 1002: "b'"})) == 2


def test_cli_list_and_errors(brain_patches: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    help_text = brain_patches.make_parser().format_help()
    for option in ("--task", "--format", "--train-per-class", "--test-per-class", "--seed", "--list", "--midline"):
        assert option in help_text
    assert brain_patches.main(["--list"]) == 0
    assert "aal10" in capsys.readouterr().out
    assert brain_patches.main(["--task", "nope", "--out", str(tmp_path)]) == 2
    assert brain_patches.main(["--format", "png", "--out", str(tmp_path)]) == 2
