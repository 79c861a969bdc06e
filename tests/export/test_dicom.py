"""DICOM export: values back through pydicom, SimpleITK and ingest; no identifiers; valid UIDs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medcondense import store
from medcondense.config import ExportConfig
from medcondense.errors import ConfigError
from medcondense.export import dicom, pipeline
from medcondense.export.intensity import intensity_map

# attributes that identify a patient, a visit or a place; none may carry a value
PHI_KEYWORDS = (
    "PatientBirthDate", "PatientSex", "PatientAge", "PatientAddress", "OtherPatientIDs",
    "OtherPatientNames", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "AccessionNumber", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "StudyTime", "StudyID", "StationName", "DeviceSerialNumber",
    "MedicalRecordLocator", "PatientTelephoneNumbers", "IssuerOfPatientID",
)


def export(path: Path, out: Path, **options) -> Path:
    pipeline.run(ExportConfig(input=str(path), output=str(out), formats=["dicom"], **options))
    return out / "dicom"


def files_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.rglob("*.dcm"))}


def expected_values(image_set: store.ImageSet) -> np.ndarray:
    return intensity_map(image_set.attrs, image_set.image_shape[0]).to_modality(image_set.images)[:, 0]


def stems(image_set: store.ImageSet) -> list[str]:
    from medcondense.export.context import ExportContext

    return ExportContext(image_set, "x.h5", "0" * 64).image_names()


def test_pydicom_reads_back_hounsfield_units_within_quantization(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    files = files_by_stem(export(syn_h5, tmp_path / "out"))
    expected = expected_values(syn_set)
    # the window 40/400 maps [0, 1] onto [-160, 240] HU
    assert expected.min() >= -160 - 1e-6 and expected.max() <= 240 + 1e-6
    for i, stem in enumerate(stems(syn_set)):
        ds = pydicom.dcmread(files[stem])
        hu = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
        assert np.abs(hu - expected[i]).max() <= float(ds.RescaleSlope) / 2 + 1e-9
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40.0, 400.0)
        assert ds.RescaleType == "HU" and ds.Modality == "CT"


def test_simpleitk_reads_every_file_with_the_same_values(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    files = files_by_stem(export(syn_h5, tmp_path / "out"))
    expected = expected_values(syn_set)
    for i, stem in enumerate(stems(syn_set)):
        image = sitk.ReadImage(str(files[stem]))
        values = sitk.GetArrayFromImage(image)[0]
        slope = float(pydicom.dcmread(files[stem], stop_before_pixels=True).RescaleSlope)
        assert np.abs(values - expected[i]).max() <= slope / 2 + 1e-6
        assert image.GetSpacing()[:2] == pytest.approx((0.8, 0.8))


def test_synthetic_headers_say_synthetic_and_carry_no_phi(syn_h5: Path, tmp_path: Path) -> None:
    for path in export(syn_h5, tmp_path / "out").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == dicom.SECONDARY_CAPTURE
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert str(ds.PatientName) == "SYNTHETIC^DM" and ds.PatientID == "SYNTHETIC"
        assert ds.ConversionType == "SYN"
        assert "SYNTHETIC" in ds.ImageComments and "dm" in ds.DerivationDescription
        assert ds.PatientIdentityRemoved == "YES"
        for keyword in PHI_KEYWORDS:
            assert not str(ds.get(keyword, "") or ""), keyword
        assert not any(elem.tag.is_private for elem in ds)


def test_one_series_per_class_one_study_unique_valid_uids(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in export(syn_h5, tmp_path / "out", uid_root="1.2.3.4").rglob("*.dcm")]
    assert len({ds.StudyInstanceUID for ds in headers}) == 1
    series = {}
    for ds in headers:
        series.setdefault(ds.SeriesDescription, set()).add(ds.SeriesInstanceUID)
    assert sorted(series) == syn_set.class_names and all(len(v) == 1 for v in series.values())
    sops = [ds.SOPInstanceUID for ds in headers]
    assert len(set(sops)) == len(sops)
    for uid in sops + [headers[0].StudyInstanceUID]:
        assert uid.startswith("1.2.3.4.") and len(uid) <= 64 and pydicom.uid.UID(uid).is_valid


def test_uid_root_validation() -> None:
    assert dicom.validate_uid_root("1.2.840.99") == "1.2.840.99."
    assert dicom.validate_uid_root(None) == dicom.DEFAULT_UID_ROOT
    for bad in ("1.2.03", "abc", "1..2", "1.2." + "9" * 40):
        with pytest.raises(ConfigError, match="uid-root"):
            dicom.validate_uid_root(bad)


def test_subset_export_is_real_never_synthetic_and_strips_identifiers(subset_h5: Path, tmp_path: Path) -> None:
    image_set = store.read(subset_h5)
    folder = export(subset_h5, tmp_path / "out", allow_real=True)
    secrets = {str(v) for name in ("source_path", "series_key", "patient_key", "site") for v in image_set.meta[name]}
    for path in folder.rglob("*.dcm"):
        raw = path.read_bytes()
        assert b"SYNTHETIC" not in raw.upper()
        assert not any(s.encode() in raw for s in secrets), path
        ds = pydicom.dcmread(path)
        assert ds.ConversionType == "WSD" and ds.PatientID.startswith("ANON")
        assert "Real image" in ds.ImageComments


def test_unknown_window_exports_window_space(real_h5: Path, blob_set, tmp_path: Path) -> None:
    # the fixture's window is "percentile": chosen per series, so not invertible
    files = files_by_stem(export(real_h5, tmp_path / "out", allow_real=True))
    ds = pydicom.dcmread(files[stems(blob_set)[0]])
    values = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    assert np.abs(values - blob_set.images[0, 0]).max() <= float(ds.RescaleSlope) / 2 + 1e-9
    assert ds.RescaleType == "US"


def test_manifest_lists_every_file_with_label_and_split(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    folder = export(syn_h5, tmp_path / "out")
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == syn_set.n
    assert all((folder / r["path"]).is_file() and r["split"] == "train" for r in rows)
    assert [r["label"] for r in rows] == [syn_set.class_names[k] for k in syn_set.labels]


def test_rescale_for_keeps_decimal_strings_short() -> None:
    values = np.array([[-1234.56789, 3071.123456]])
    slope, intercept = dicom.rescale_for(values)
    assert len(dicom._ds_text(slope, 8)) <= 16 and len(dicom._ds_text(intercept)) <= 16
    stored = np.round((values - intercept) / slope)
    assert stored.min() >= 0 and stored.max() <= dicom.STORED_MAX
    assert np.abs(stored * slope + intercept - values).max() <= slope / 2 + 1e-9
