"""DICOM: headers, series grouping and ordering, pixel decoding to modality values.

Headers hold identifiers (PatientID, UIDs) only in memory, to group and to hash; nothing here
is written out. Pixels go through the modality LUT (rescale slope/intercept) in float.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from medcondense.ingest.window import first_value

log = logging.getLogger(__name__)

CODECS_HINT = "pip install medcondense[codecs]"
ANONYMOUS_IDS = {"", "ANON", "ANONYMOUS", "ANONYMIZED", "UNKNOWN", "NONE", "0", "NA", "N/A"}


@dataclass
class Header:
    """What we need of one DICOM file (identifiers stay in memory only)."""

    path: str
    root: str
    series_uid: str
    sop_uid: str
    patient_id: str
    study_uid: str
    modality: str
    rows: int
    cols: int
    frames: int
    samples: int
    photometric: str
    bits_stored: int
    transfer_syntax: str
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    instance: int | None = None
    voi: tuple[float, float] | None = None
    label: str | None = None
    burned_in: bool = False
    accession: str = ""
    # where the pixels come from when not from ``path``: an object with ``load() -> Dataset``
    # (a DICOMweb instance, see :mod:`medcondense.ingest.dicomweb`)
    source: object | None = None


@dataclass
class Unit:
    """A volume or a set of 2D images read together: one series, or one multi-frame file."""

    series_uid: str
    headers: list[Header]
    is_volume: bool
    slice_spacing: float = 0.0
    warnings: list[str] = field(default_factory=list)


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _pixel_spacing(ds) -> tuple[float, float]:
    for holder in (ds, *_functional_groups(ds)):
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = _floats(holder.get(keyword), 2)
            if value and all(v > 0 for v in value):
                return value  # type: ignore[return-value]
    return (1.0, 1.0)


def _functional_groups(ds) -> list:
    """Pixel Measures items of the shared functional groups of an enhanced multi-frame file."""
    out = []
    for seq in ds.get("SharedFunctionalGroupsSequence", []) or []:
        out.extend(seq.get("PixelMeasuresSequence", []) or [])
    return out


#: attributes that say text or a face may be visible in the pixels (PS3.3 C.7.6.1.1.7/8)
BURNED_IN_KEYWORDS = ("BurnedInAnnotation", "RecognizableVisualFeatures")


def burned_in_reason(ds) -> str | None:
    """Which attribute says YES (the image may show a name or a face), or None."""
    for keyword in BURNED_IN_KEYWORDS:
        if str(ds.get(keyword, "") or "").strip().upper() == "YES":
            return keyword
    return None


def read_header(path: str, root: str, label_tag: str | None = None, allow_burned_in: bool = False) -> Header | str:
    """Read one file's header; return a :class:`Header` or the reason it cannot be used."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True, defer_size=1024)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a reject
        return f"unreadable DICOM ({type(exc).__name__}); the file may be truncated or damaged"
    return header_from_dataset(ds, path, root, label_tag, allow_burned_in=allow_burned_in)


def header_from_dataset(ds, path: str, root: str, label_tag: str | None = None, *,
                        need_pixels: bool = True, allow_burned_in: bool = False) -> Header | str:
    """A :class:`Header` from a parsed dataset (a file's, or DICOMweb metadata with
    ``need_pixels=False``, which lists pixel data as a bulk-data reference or not at all)."""
    try:
        return header_from(ds, path, root, label_tag, need_pixels=need_pixels, allow_burned_in=allow_burned_in)
    except Exception as exc:  # noqa: BLE001 - malformed values
        return f"malformed DICOM header ({type(exc).__name__})"


def header_from(ds, path: str, root: str, label_tag: str | None = None, *, need_pixels: bool = True,
                allow_burned_in: bool = False) -> Header | str:
    """The :class:`Header` of a parsed file (a pydicom Dataset or a light one, see
    :mod:`medcondense.ingest.dicomfast`, or DICOMweb metadata with ``need_pixels=False``, which lists
    pixel data as a bulk-data reference or not at all), or the reason it is not an image.
    Raises on malformed values (and ``dicomfast.NotLight`` for a light dataset that needs pydicom)."""
    if "Rows" not in ds or "Columns" not in ds:
        return "not an image (no Rows/Columns: e.g. a report, structure set or DICOMDIR)"
    if need_pixels and not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return "no pixel data"
    burned = burned_in_reason(ds)
    if burned and not allow_burned_in:
        return (f"{burned} is YES: the pixels may show a name or a face (pass --allow-burned-in "
                "to keep such images; exports then say BurnedInAnnotation YES)")
    label = None
    if label_tag:
        value = ds.get(label_tag)
        label = None if value is None or str(value).strip() == "" else str(value).strip()
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    thickness = first_value(ds.get("SpacingBetweenSlices")) or first_value(ds.get("SliceThickness")) or 0.0
    center, width = first_value(ds.get("WindowCenter")), first_value(ds.get("WindowWidth"))
    instance = ds.get("InstanceNumber")
    return Header(
        path=path, root=root,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        accession=str(ds.get("AccessionNumber", "") or "").strip(),
        modality=str(ds.get("Modality", "") or ""),
        rows=int(ds.Rows), cols=int(ds.Columns),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        samples=int(ds.get("SamplesPerPixel", 1) or 1),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip(),
        bits_stored=int(ds.get("BitsStored", 8) or 8),
        transfer_syntax=ts,
        pixel_spacing=_pixel_spacing(ds),
        slice_spacing=float(thickness),
        position=_floats(ds.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        instance=int(instance) if instance not in (None, "") else None,
        voi=(center, width) if center is not None and width else None,
        label=label,
        burned_in=burned is not None,
    )


def read_header_task(args: tuple[str, str, str | None, bool]) -> Header | str:
    """:func:`read_header` taking one tuple (for ``executor.map``)."""
    return read_header(*args)


# ------------------------------------------------------------------------------ grouping


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    """The unit normal of a slice from ImageOrientationPatient (row x column direction cosines)."""
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def order_slices(headers: list[Header]) -> tuple[list[Header], bool]:
    """Sort a series: by position along the slice normal when every file has geometry, else by
    InstanceNumber (then path). Returns the sorted list and whether geometry was used."""
    geometric = all(h.position is not None and h.orientation is not None for h in headers)
    if geometric and len(headers) > 1:
        normal = slice_normal(headers[0].orientation)  # type: ignore[arg-type]
        return sorted(headers, key=lambda h: (float(np.dot(h.position, normal)), h.path)), True
    return sorted(headers, key=lambda h: (h.instance if h.instance is not None else 0, h.path)), False


def _median(values: list[float]) -> float:
    """The median as :func:`statistics.median` computes it (the mean of the two middle values for
    an even count). Neither is imported for it: np.median imports numpy.ma (50 ms of start-up),
    statistics imports decimal and fractions (10 ms), for a handful of slice distances."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def spacing_problems(positions: np.ndarray) -> tuple[float, list[str]]:
    """Median slice distance of sorted positions along the normal, and warnings (gaps, unevenness)."""
    if len(positions) < 2:
        return 0.0, []
    steps = np.diff(positions)
    median = _median(steps.tolist())
    problems = []
    if median <= 0:
        return 0.0, ["slices share one position"]
    gaps = int(np.sum(steps > 1.5 * median))
    if gaps:
        problems.append(f"{gaps} gap(s) between slices (median spacing {median:.3g} mm)")
    elif float(steps.max() - steps.min()) > 0.1 * median:
        problems.append(f"uneven slice spacing ({steps.min():.3g}-{steps.max():.3g} mm)")
    return median, problems


def drop_duplicates(headers: list[Header]) -> tuple[list[Header], int]:
    """Keep the first file of each SOPInstanceUID (files without one are all kept)."""
    seen: set[str] = set()
    kept = []
    for h in sorted(headers, key=lambda h: h.path):
        if h.sop_uid and h.sop_uid in seen:
            continue
        seen.add(h.sop_uid)
        kept.append(h)
    return kept, len(headers) - len(kept)


def group_units(headers: list[Header]) -> tuple[list[Unit], list[tuple[str, str]]]:
    """Group headers into units (a series, or one multi-frame file), ordered, with rejects for
    duplicates' partners and for files whose size differs from the rest of their volume."""
    by_series: dict[str, list[Header]] = defaultdict(list)
    units: list[Unit] = []
    rejects: list[tuple[str, str]] = []
    for h in headers:
        if h.frames > 1:
            units.append(Unit(h.series_uid, [h], is_volume=True, slice_spacing=h.slice_spacing))
        else:
            by_series[h.series_uid or f"file:{h.path}"].append(h)
    for uid in sorted(by_series):
        group, dropped = drop_duplicates(by_series[uid])
        unit_warnings = [f"dropped {dropped} duplicate slice(s) (same SOPInstanceUID)"] if dropped else []
        ordered, geometric = order_slices(group)
        is_volume = geometric and len(ordered) > 1
        if is_volume:
            sizes = Counter((h.rows, h.cols) for h in ordered)
            (rows, cols), _ = sizes.most_common(1)[0]
            for h in ordered:
                if (h.rows, h.cols) != (rows, cols):
                    rejects.append((h.path, f"size {h.rows}x{h.cols} differs from its series ({rows}x{cols})"))
            ordered = [h for h in ordered if (h.rows, h.cols) == (rows, cols)]
        spacing = 0.0
        if is_volume and len(ordered) > 1:
            normal = slice_normal(ordered[0].orientation)  # type: ignore[arg-type]
            positions = np.array([np.dot(h.position, normal) for h in ordered])
            spacing, problems = spacing_problems(positions)
            unit_warnings += problems
        elif ordered:
            spacing = ordered[0].slice_spacing
        if ordered:
            units.append(Unit(uid, ordered, is_volume=is_volume and len(ordered) > 1,
                              slice_spacing=spacing, warnings=unit_warnings))
    return units, rejects


# ------------------------------------------------------------------------------ pixels


class DecodeError(Exception):
    """Pixel data that cannot be decoded; the message is the reject reason."""


# JPEG-LS and the lossless/extended JPEG processes are decoded by pylibjpeg-libjpeg, which is
# GPL-3.0: it stays out of the BSD `codecs` extra, and the hint names it for those syntaxes.
_LIBJPEG_SYNTAXES = {
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, SV1
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (12-bit)
}


def codec_hint(ts_uid: str) -> str:
    """The install command that brings a decoder for this transfer syntax."""
    if str(ts_uid) in _LIBJPEG_SYNTAXES:
        return "pip install pylibjpeg pylibjpeg-libjpeg  (GPL-3.0, not in medcondense[codecs])"
    return CODECS_HINT


def _decode_reason(exc: Exception, ts_uid: str) -> str:
    from pydicom.uid import UID

    uid = UID(ts_uid) if ts_uid else None
    text = str(exc)
    if uid is not None and uid.is_compressed and (
        "missing dependencies" in text or "plugin" in text.lower() or isinstance(exc, NotImplementedError)
    ):
        return (f"cannot decode the {uid.name} ({uid}) pixel data: no codec installed for it; "
                f"install one with `{codec_hint(uid)}`")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot read the pixel data ({type(exc).__name__}: {first[:160]})"


def read_frames(path, frames: list[int] | None = None) -> np.ndarray:
    """Decode frames of a file (a path, or an object whose ``load()`` gives the dataset: a
    DICOMweb instance) to modality values, float32 ``[F, rows, cols, samples]``.

    MONOCHROME1 is left as stored (inverted after windowing); palette colour becomes RGB.

    Raises
    ------
    DecodeError
        Missing codec (naming the transfer syntax), truncated or inconsistent pixel data.
    """
    import pydicom

    if hasattr(path, "load"):
        ds = path.load()  # raises DecodeError with the reason
    else:
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001
            raise DecodeError(f"unreadable DICOM ({type(exc).__name__})") from None
    return frames_from(ds, frames)


def frames_from(ds, frames: list[int] | None = None) -> np.ndarray:
    """:func:`read_frames` on a Dataset already read (with its pixel data)."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        if frames is None or n_frames == 1:
            arr = ds.pixel_array
            if n_frames == 1:
                arr = arr[None]
        else:
            from pydicom.pixels import pixel_array

            arr = np.stack([pixel_array(ds, index=i) for i in frames])
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(_decode_reason(exc, ts)) from None
    if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        arr = np.asarray(apply_modality_lut(arr, ds))
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 3:
        arr = arr[..., None]
    if frames is not None and n_frames == 1:
        arr = arr[[0]]
    elif frames is not None and arr.shape[0] == n_frames and len(frames) != n_frames:
        arr = arr[frames]
    return arr


def to_channels(frame: np.ndarray, channels: str) -> np.ndarray:
    """``[rows, cols, samples]`` -> ``[C, rows, cols]``: luminance for ``grey``, all samples for ``keep``."""
    if frame.shape[-1] == 1:
        return frame[..., 0][None]
    if channels == "grey":
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[: frame.shape[-1]]
        return (frame[..., : len(weights)] @ (weights / weights.sum()))[None].astype(np.float32)
    return np.moveaxis(frame, -1, 0)
