"""DICOM export: one Secondary Capture image per sample, one series per class, no patient data.

What is written (``dicom/<class>/<class>_<k>.dcm`` and ``dicom/manifest.csv``):

- SOP class Secondary Capture Image Storage; Modality the set's modality when it is a DICOM code
  (CT, MR, ...) else OT; ConversionType ``SYN`` (synthetic image) for a synthetic set, ``WSD``
  for real images (a subset or real set, which need ``--allow-real``); ImageType
  ``DERIVED\\SECONDARY``.
- No identifier from anywhere: PatientName ``SYNTHETIC^<METHOD>`` / PatientID ``SYNTHETIC``
  (``ANONYMOUS^<KIND>`` / ``ANON0001``... numbered per patient within the export for real
  images, so patient-level splits stay possible), every other patient/study attribute
  empty. PatientIdentityRemoved is ``YES`` only for synthetic images of a source not flagged
  for burned-in text (``NO`` for real images: their pixels may show a face or text nobody has
  checked); BurnedInAnnotation is ``YES`` when the source kept flagged images
  (``ingest --allow-burned-in``). UIDs are fresh under ``--uid-root``, derived from the
  set's content hash, so exporting the same set twice gives the same UIDs.
- ImageComments and DerivationDescription say what the image is (synthetic, which method; or
  real images re-exported without identifiers) and how its values were mapped.
- Pixels: grey images as uint16 with a per-image RescaleSlope/Intercept, so that the modality
  values (e.g. Hounsfield units) come back to within half a slope step; see
  :mod:`medcondense.export.intensity` for what is inverted. WindowCenter/Width hold the ingest
  window, so ``ingest --window voi`` reproduces the set. When the window is unknown the
  rescaled values are the set's window-space values (0..1, RescaleType ``US``) and the window
  tags span the image. RGB images are stored as 8-bit RGB in the display range.
- ``manifest.csv`` (path,label,patient,split) lets ``ingest --labels`` restore labels and splits;
  the patient column holds the same placeholders as PatientID.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from medcondense import store
from medcondense.errors import ConfigError
from medcondense.export.context import ExportContext, FormatResult, channels_last, to_uint8

FOLDER = "dicom"
CHANNELS = (1, 3)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root
MAX_ROOT_LENGTH = 40  # leaves 24 digits of the 64-character UID for the unique part
STORED_MAX = 65535
DICOM_MODALITIES = {"CT", "MR", "CR", "DX", "MG", "US", "PT", "NM", "XA", "RF", "OT", "OP", "SM", "IO", "PX", "ES", "XC"}
_UID_ROOT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.?$")


def validate_uid_root(root: str | None) -> str:
    """Check ``--uid-root`` and return it ending in a dot (pydicom's root when None).

    Raises
    ------
    ConfigError
        Not dot-separated numbers without leading zeros, or longer than 40 characters.
    """
    if root is None or root == "":
        return DEFAULT_UID_ROOT
    text = root.strip()
    if not _UID_ROOT.match(text):
        raise ConfigError(
            f"--uid-root {root!r} is not a UID root: digits separated by dots, no leading zeros "
            "(e.g. 1.2.826.0.1.3680043.10.999)"
        )
    text = text if text.endswith(".") else text + "."
    if len(text) > MAX_ROOT_LENGTH:
        raise ConfigError(f"--uid-root {root!r} is {len(text)} characters; at most {MAX_ROOT_LENGTH} leave room for unique UIDs")
    return text


def export(ctx: ExportContext, root: Path) -> FormatResult:
    """Write ``root/dicom/<class>/*.dcm`` (one series per class) and ``root/dicom/manifest.csv``."""
    out = root / FOLDER
    uid_root = validate_uid_root(ctx.uid_root)
    s = ctx.image_set
    study_uid = _uid(uid_root, ctx.digest, "study")
    series_uids = [_uid(uid_root, ctx.digest, "series", str(k)) for k in range(s.num_classes)]
    folders = ctx.class_dir_names()
    rgb = s.image_shape[0] == 3
    values = channels_last(to_uint8(ctx.intensity.to_display(s.images))) if rgb else ctx.intensity.to_modality(s.images)[:, 0]
    rows: list[tuple[str, str, str, str]] = []
    instance = [0] * s.num_classes
    patients = ctx.patient_pseudonyms()
    for index, (name, label) in enumerate(zip(ctx.image_names(), s.labels.tolist())):
        instance[label] += 1
        ds = _dataset(ctx, index, label, study_uid, series_uids[label], instance[label], uid_root)
        ds.PatientID = patients[index]
        if rgb:
            _set_pixels_rgb(ds, values[index])
        else:
            _set_pixels_grey(ds, values[index], ctx)
        target = out / folders[label]
        target.mkdir(parents=True, exist_ok=True)
        ds.save_as(target / f"{name}.dcm", enforce_file_format=True)
        split = store.SPLIT_NAMES[int(s.split[index])]
        # a synthetic image has no patient; one per split keeps ingest's patient-level check happy
        patient = f"{patients[index]}-{split}" if ctx.is_synthetic else patients[index]
        rows.append((f"{folders[label]}/{name}.dcm", s.class_names[label], patient, split))
    _write_manifest(out / "manifest.csv", rows)
    notes = [] if ctx.intensity.known else ["window unknown: DICOM values are window-space 0..1 (RescaleType US)"]
    return FormatResult(FOLDER, s.n + 1, notes)


def _uid(root: str, digest: str, *parts: str) -> str:
    """A UID under ``root``, fixed by the set's content hash and ``parts`` (study, series k, image i)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=root, entropy_srcs=[digest, root, *parts]))


def _comment(ctx: ExportContext) -> str:
    """ImageComments / DerivationDescription text (DerivationDescription is limited to 1024 chars)."""
    s = ctx.image_set
    if ctx.is_synthetic:
        what = f"SYNTHETIC image made by dataset distillation ({ctx.method}, {s.attrs.get('ipc', '?')} images per class); not an image of any patient"
    else:
        what = f"Real image ({s.kind} set, {ctx.method}) re-exported without identifiers"
    return f"{what}. medcondense export; values: {ctx.intensity.description}."[:1024]


def _dataset(ctx: ExportContext, index: int, label: int, study_uid: str, series_uid: str,
             instance: int, uid_root: str) -> Any:
    """The header of one image: SOP common, patient/study/series placeholders, SC equipment."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from medcondense import __version__

    s = ctx.image_set
    sop_uid = _uid(uid_root, ctx.digest, "image", str(index))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid(uid_root, "medcondense", __version__)
    meta.ImplementationVersionName = f"MEDCONDENSE{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["DERIVED", "SECONDARY"]
    tag = "SYNTHETIC" if ctx.is_synthetic else "ANONYMOUS"
    ds.PatientName = f"{tag}^{(ctx.method if ctx.is_synthetic else s.kind).upper()}"
    ds.PatientID = tag
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    burned_in = int(s.attrs.get("burned_in_images", 0) or 0) > 0
    # YES only where medcondense can vouch for the pixels too: synthetic images of a source
    # not flagged for burned-in text. Real images may show a face or text nobody has checked.
    vouched = ctx.is_synthetic and not burned_in
    ds.PatientIdentityRemoved = "YES" if vouched else "NO"
    ds.DeidentificationMethod = (  # LO: at most 64 characters
        "medcondense export: no source attribute copied" if vouched
        else "medcondense: no source attribute copied; pixels not verified")
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = ("SYNTHETIC " if ctx.is_synthetic else "") + f"medcondense {s.kind} set"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = label + 1
    ds.SeriesDescription = str(s.class_names[label])[:64]
    modality = str(s.attrs.get("modality") or "OT").upper()
    ds.Modality = modality if modality in DICOM_MODALITIES else "OT"
    ds.ConversionType = "SYN" if ctx.is_synthetic else "WSD"
    ds.Manufacturer = "medcondense"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = instance
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.ImageComments = _comment(ctx)
    ds.DerivationDescription = _comment(ctx)
    col, row, _ = ctx.spacing(index)
    ds.PixelSpacing = [_ds_text(row), _ds_text(col)]
    return ds


def _ds_text(value: float, digits: int = 10) -> str:
    """A decimal string that fits DICOM's 16 characters."""
    for d in range(digits, 3, -1):
        text = f"{value:.{d}g}"
        if len(text) <= 16:
            return text
    return f"{value:.3g}"


def rescale_for(values: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) mapping uint16 0..65535 onto the value range of one image.

    Both are rounded to what a DICOM decimal string holds *before* use, so the stored integers
    are computed with the same numbers a reader gets back.
    """
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 0:
        return 1.0, float(_ds_text(lo))
    slope = float(_ds_text((hi - lo) / (STORED_MAX - 1), 8))  # one step of headroom for rounding
    intercept = float(_ds_text(lo))
    return slope, intercept


def _set_pixels_grey(ds: Any, values: np.ndarray, ctx: ExportContext) -> None:
    """uint16 MONOCHROME2 pixels with RescaleSlope/Intercept restoring ``values`` [H, W]."""
    slope, intercept = rescale_for(values)
    stored = np.clip(np.round((values - intercept) / slope), 0, STORED_MAX).astype(np.uint16)
    _image_pixel(ds, stored, samples=1)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.RescaleSlope = _ds_text(slope, 8)
    ds.RescaleIntercept = _ds_text(intercept)
    ds.RescaleType = "HU" if ctx.intensity.known and ds.Modality == "CT" else "US"
    if ctx.intensity.window is not None:
        centre, width = ctx.intensity.window
    else:
        lo, hi = float(values.min()), float(values.max())
        centre, width = (lo + hi) / 2.0, max(hi - lo, 1e-6)
    ds.WindowCenter = _ds_text(centre)
    ds.WindowWidth = _ds_text(width)


def _set_pixels_rgb(ds: Any, pixels: np.ndarray) -> None:
    """8-bit RGB pixels [H, W, 3], colour-by-pixel (PlanarConfiguration 0)."""
    _image_pixel(ds, np.ascontiguousarray(pixels, dtype=np.uint8), samples=3)
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0


def _image_pixel(ds: Any, stored: np.ndarray, *, samples: int) -> None:
    bits = stored.dtype.itemsize * 8
    ds.SamplesPerPixel = samples
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = stored.tobytes()


def _write_manifest(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """path,label,patient,split for ``ingest --labels`` (paths relative to the dicom folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "patient", "split"])
        writer.writerows(rows)
