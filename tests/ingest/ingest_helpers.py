"""Helpers that write real DICOM files with pydicom (imported by the ingest tests and conftest)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest


CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
MR_SOP = "1.2.840.10008.5.1.4.1.1.4"
UID_ROOT = "1.2.826.0.1.3680043.10.999."


def bundled(name: str) -> Path:
    """A file bundled with pydicom or pydicom-data (never downloads)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return Path(path)


def make_dataset(pixels: np.ndarray, *, patient: str = "PAT1", study_uid: str | None = None,
                 series_uid: str | None = None, sop_uid: str | None = None, modality: str = "CT",
                 position=(0.0, 0.0, 0.0), orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
                 spacing=(0.8, 0.8), slope: float = 1.0, intercept: float = -1024.0,
                 photometric: str = "MONOCHROME2", instance: int = 1, voi=None, extra: dict | None = None):
    """A complete single- or multi-frame DICOM dataset around int16 ``pixels`` ([rows, cols] or [F, rows, cols])."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_uid = sop_uid or generate_uid(UID_ROOT)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_SOP if modality == "CT" else MR_SOP
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = patient
    ds.PatientName = "Doe^" + patient
    ds.StudyInstanceUID = study_uid or generate_uid(UID_ROOT)
    ds.SeriesInstanceUID = series_uid or generate_uid(UID_ROOT)
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing]
    ds.SliceThickness = 2.5
    arr = np.ascontiguousarray(pixels, dtype=np.int16)
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    ds.Rows, ds.Columns = arr.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if voi is not None:
        ds.WindowCenter, ds.WindowWidth = voi
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = arr.tobytes()
    return ds


def write_series(folder: Path, *, n: int = 6, rows: int = 24, cols: int = 24, patient: str = "PAT1",
                 step: float = 2.5, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), skip: tuple[int, ...] = (),
                 duplicate: bool = False, seed: int = 0, **kwargs) -> list[Path]:
    """Write an ``n``-slice series in shuffled file order; slice k holds value 100*k + 1024 (0 HU + 100k).

    Positions run along the slice normal of ``orientation``; ``skip`` leaves gaps; ``duplicate``
    writes one slice twice (same SOPInstanceUID, another file name).
    """
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    series_uid, study_uid = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    indices = [k for k in range(n + len(skip)) if k not in skip]
    names = [f"img{v:04d}" for v in rng.sample(range(9999), len(indices) + 1)]
    paths = []
    for j, k in enumerate(indices):
        pixels = np.full((rows, cols), 1024 + 100 * k, dtype=np.int16)
        pixels[: rows // 4, : cols // 4] = 1024 + 100 * k + 50  # an orientation marker
        ds = make_dataset(pixels, patient=patient, series_uid=series_uid, study_uid=study_uid,
                          position=tuple(normal * step * k + np.array([-10.0, 5.0, 3.0])),
                          orientation=orientation, instance=n - j, **kwargs)
        path = folder / names[j]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        if duplicate and j == 1:
            dup = folder / names[-1]
            ds.save_as(dup, enforce_file_format=True)
            paths.append(dup)
    return paths
