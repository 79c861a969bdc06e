"""Labels CSVs keyed by DICOM identity (study_uid, series_uid, accession, patient_id) on folders,
and the option checks of DICOMweb inputs that need no server."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from ingest_helpers import write_series

from medcondense import store
from medcondense.errors import ConfigError
from medcondense.ingest import labels, pipeline


def sheet(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def trio(tmp_path) -> Path:
    """Three patients, one 3-slice series each, in one folder level (folder names are not labels)."""
    root = tmp_path / "in"
    for p in range(3):
        write_series(root / f"s{p}", patient=f"MRN-55{p}", n=3, seed=p,
                     extra={"AccessionNumber": f"ACC-77{p}"})
    return root


def uid_of(folder: Path, keyword: str) -> str:
    return str(pydicom.dcmread(next(folder.iterdir())).get(keyword))


@pytest.mark.parametrize("key,keyword", [("study_uid", "StudyInstanceUID"), ("series_uid", "SeriesInstanceUID"),
                                         ("accession", "AccessionNumber"), ("patient_id", "PatientID")])
def test_identity_keys_label_folders_and_are_not_stored(trio, tmp_path, config, key, keyword):
    rows = [(uid_of(trio / f"s{p}", keyword), ("calm", "calm", "storm")[p]) for p in range(3)]
    csv_path = sheet(tmp_path / "labels.csv", ["label", key], [(label, value) for value, label in rows])
    summary = pipeline.run(config([trio], labels_csv=str(csv_path)))
    assert summary["classes"] == {"calm": 6, "storm": 3} and summary["rejects"] == 0
    data = store.read(tmp_path / "out.h5")
    assert data.class_names == ["calm", "storm"]
    blob = (tmp_path / "out.h5").read_bytes()
    for value, _ in rows:
        assert value.encode() not in blob


def test_exactly_one_key_column(trio, tmp_path, config):
    both = sheet(tmp_path / "both.csv", ["study_uid", "accession", "label"], [("1.2", "A", "x")])
    with pytest.raises(ConfigError, match="2 key columns"):
        pipeline.run(config([trio], labels_csv=str(both)))
    with_path = sheet(tmp_path / "p.csv", ["path", "patient_id", "label"], [("a", "b", "x")])
    with pytest.raises(ConfigError, match="exactly one of path"):
        labels.read_sheet(with_path)
    no_label = sheet(tmp_path / "n.csv", ["study_uid", "split"], [("1.2", "train")])
    with pytest.raises(ConfigError, match="label column"):
        labels.read_sheet(no_label)


def test_unmatched_rows_name_lines_not_keys(trio, tmp_path, config):
    rows = [(uid_of(trio / f"s{p}", "PatientID"), "x") for p in range(3)] + [("MRN-GHOST", "y")]
    csv_path = sheet(tmp_path / "l.csv", ["patient_id", "label"], rows)
    with pytest.raises(ConfigError) as info:
        pipeline.run(config([trio], labels_csv=str(csv_path)))
    assert "1 row(s) match no input image by patient_id: line(s) 5" in str(info.value)
    assert "MRN-GHOST" not in str(info.value) and not (tmp_path / "out.h5").exists()


def test_unlabelled_and_conflicting_images_are_rejected(trio, tmp_path, config):
    p0, p1 = (uid_of(trio / f"s{p}", "SeriesInstanceUID") for p in (0, 1))
    csv_path = sheet(tmp_path / "l.csv", ["series_uid", "label"], [(p0, "a"), (p1, "a"), (p1, "b"), (p0, "a")])
    summary = pipeline.run(config([trio], labels_csv=str(csv_path)))
    assert summary["images"] == 3 and summary["rejects"] == 6 and summary["exit_code"] == 4
    report = Path(summary["rejects_report"]).read_text()
    assert report.count("conflicting rows for its series_uid in the labels CSV (lines 3, 4; labels a, b)") == 3
    assert report.count("matches no row of the labels CSV (by series_uid)") == 3


def test_nifti_cannot_match_an_identity_sheet(trio, tmp_path, config):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)), str(trio / "vol.nii.gz"))
    rows = [(uid_of(trio / f"s{p}", "StudyInstanceUID"), "x") for p in range(3)]
    csv_path = sheet(tmp_path / "l.csv", ["study_uid", "label"], rows)
    summary = pipeline.run(config([trio], labels_csv=str(csv_path)))
    assert summary["rejects"] == 1 and "has no study_uid to match" in Path(summary["rejects_report"]).read_text()


def test_dicomweb_option_checks_need_no_server(trio, tmp_path, config):
    url = "http://127.0.0.1:9/dicom-web"
    path_sheet = sheet(tmp_path / "p.csv", ["path", "label"], [("in/s0", "x")])
    with pytest.raises(ConfigError, match="keyed by path cannot label DICOMweb"):
        pipeline.run(config([url], labels_csv=str(path_sheet), studies=["1.2"]))
    with pytest.raises(ConfigError, match="no folders to take labels from"):
        pipeline.run(config([url], studies=["1.2"]))
    with pytest.raises(ConfigError, match="apply to DICOMweb inputs"):
        pipeline.run(config([trio], studies=["1.2"]))
    with pytest.raises(ConfigError, match="say which studies"):
        pipeline.run(config([url], label_tag="Modality"))
    with pytest.raises(ConfigError, match="not a DICOM keyword"):
        pipeline.run(config([url], label_tag="Modality", query="StudyDat=2020"))
