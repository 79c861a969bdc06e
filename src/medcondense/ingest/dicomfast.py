"""A light reader for the commonest DICOM files, so ingest reads each file once and fast.

Most CT/MR series are single-frame, uncompressed, little-endian files. For those, this module
walks the top-level elements of the bytes already in memory (no pydicom import, no Dataset
objects), pulls out the few tags :func:`medcondense.ingest.dicom.header_from` reads, and views
the pixel data as a numpy array. Anything it does not handle exactly as pydicom would raises
:class:`NotLight`, and the caller reads that file with pydicom instead:

* no ``DICM`` preamble, a transfer syntax other than Implicit/Explicit VR Little Endian,
  several frames, several samples per pixel, a photometric interpretation other than
  MONOCHROME1/2 (palette colour), float pixel data, a Modality LUT Sequence;
* any text value with bytes outside ASCII (pydicom decodes those with the file's character set;
  the patient key must not depend on which reader ran);
* a keyword the reader does not know (so a field added to the header later is never read
  wrongly: such files simply take the pydicom path).

The equivalence with pydicom is tested file by file on the bundled test files.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

PREAMBLE = 128
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010

# keyword -> (tag, VR) of every element the light reader decodes
KNOWN: dict[str, tuple[int, str]] = {
    "ImageType": (0x00080008, "CS"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "Modality": (0x00080060, "CS"),
    "AccessionNumber": (0x00080050, "SH"),
    "PatientID": (0x00100020, "LO"),
    "SliceThickness": (0x00180050, "DS"),
    "SpacingBetweenSlices": (0x00180088, "DS"),
    "ImagerPixelSpacing": (0x00181164, "DS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "InstanceNumber": (0x00200013, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "BurnedInAnnotation": (0x00280301, "CS"),
    "RecognizableVisualFeatures": (0x00280302, "CS"),
    "WindowCenter": (0x00281050, "DS"),
    "WindowWidth": (0x00281051, "DS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "PixelData": (PIXEL_DATA, "OW"),
}
# present in the file -> not a light file (pydicom handles them)
HEAVY_TAGS = {
    0x00283000: "Modality LUT Sequence",
    0x52009229: "Shared Functional Groups Sequence",
    0x52009230: "Per-frame Functional Groups Sequence",
    0x7FE00008: "Float Pixel Data",
    0x7FE00009: "Double Float Pixel Data",
}
# keywords a light file never holds (their absence is certain: HEAVY_TAGS sends such files away)
ABSENT = {"SharedFunctionalGroupsSequence", "FloatPixelData", "DoubleFloatPixelData", "ModalityLUTSequence"}
_BY_TAG = {tag: (keyword, vr) for keyword, (tag, vr) in KNOWN.items()}
_ANSWERABLE = frozenset(KNOWN) | ABSENT  # keywords a light dataset can answer for, present or not


class NotLight(Exception):
    """This file needs pydicom; the message says why (for debugging, never shown as a reject)."""


class FileMeta(dict):
    """``ds.file_meta`` look-alike: only ``TransferSyntaxUID``."""


class LightDataset:
    """The decoded top-level elements of one file, read like a pydicom Dataset for the known keywords."""

    def __init__(self, values: dict[str, Any], transfer_syntax: str, pixel_offset: int, pixel_length: int,
                 data: bytes) -> None:
        self._values = values
        self.file_meta = FileMeta(TransferSyntaxUID=transfer_syntax)
        self._pixel = (pixel_offset, pixel_length)
        self._data = data

    def _check(self, keyword: str) -> None:
        if keyword not in _ANSWERABLE:
            raise NotLight(f"keyword {keyword} is not read by the light reader")

    def __contains__(self, keyword: object) -> bool:
        self._check(str(keyword))
        return keyword in self._values

    def get(self, keyword: str, default: Any = None) -> Any:
        if keyword in self._values:  # only known keywords are stored: no check (~25 calls a file)
            return self._values[keyword]
        self._check(keyword)
        return default

    def __getattr__(self, keyword: str) -> Any:
        if keyword.startswith("_"):
            raise AttributeError(keyword)
        self._check(keyword)
        try:
            return self._values[keyword]
        except KeyError:
            raise AttributeError(keyword) from None

    def pixels(self) -> np.ndarray:
        """The stored pixel values ``[rows, cols]`` (before the modality LUT), as pydicom returns them."""
        rows, cols = int(self._values["Rows"]), int(self._values["Columns"])
        bits = int(self._values.get("BitsAllocated") or 0)
        stored = int(self._values.get("BitsStored") or bits)
        signed = int(self._values.get("PixelRepresentation") or 0) == 1
        if bits not in (8, 16, 32) or not 0 < stored <= bits:
            raise NotLight(f"BitsAllocated {bits} / BitsStored {stored}")
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        offset, length = self._pixel
        need = rows * cols * dtype.itemsize
        if length < need:
            raise NotLight("pixel data shorter than Rows x Columns")  # pydicom names the problem
        arr = np.frombuffer(self._data, dtype=dtype, count=rows * cols, offset=offset).reshape(rows, cols)
        if stored < bits:  # as pydicom: ignore the unused high bits (sign-extending signed values)
            shift = bits - stored
            arr = np.left_shift(arr, shift)  # a new array (the file's bytes are read-only) ...
            np.right_shift(arr, shift, out=arr)  # ... shifted back in place
        return arr

    @property
    def rescale(self) -> tuple[float, float]:
        """(slope, intercept) of the modality LUT (1, 0 when absent)."""
        slope, intercept = self._values.get("RescaleSlope"), self._values.get("RescaleIntercept")
        return (1.0 if slope in (None, "") else float(_first(slope)),
                0.0 if intercept in (None, "") else float(_first(intercept)))


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def _text(raw: bytes) -> str:
    if not raw.isascii():
        raise NotLight("text outside ASCII (decoded with the file's character set by pydicom)")
    return raw.decode("ascii").rstrip("\x00 ").strip(" ") if raw else ""


def _decode(raw: bytes, vr: str) -> Any:
    """A value as pydicom gives it: str, int, float, or a list for several values."""
    if vr == "US":
        if len(raw) == 2:  # one value, the usual case
            return raw[0] | (raw[1] << 8)
        values = list(struct.unpack(f"<{len(raw) // 2}H", raw[: len(raw) // 2 * 2]))
        return values[0] if len(values) == 1 else (values or None)
    if vr == "OW":
        return raw
    text = _text(raw)
    if "\\" not in text:  # one value (most elements): what the general path below gives for it
        if vr == "DS" or vr == "IS":
            if not text:
                return None
            try:
                return float(text) if vr == "DS" else int(float(text))
            except ValueError:
                raise NotLight(f"malformed {vr} value") from None
        return text
    parts = [p.strip(" ") for p in text.split("\\")] if text else []
    if vr in ("DS", "IS"):
        if not parts or parts == [""]:
            return None
        try:
            numbers = [float(p) if vr == "DS" else int(float(p)) for p in parts]
        except ValueError:
            raise NotLight(f"malformed {vr} value") from None
        return numbers[0] if len(numbers) == 1 else numbers
    if vr == "CS" and len(parts) > 1:
        return parts
    return text


def _skip_sequence(data: bytes, pos: int, explicit: bool) -> int:
    """Position after an undefined-length sequence starting at ``pos`` (its items may nest)."""
    end = len(data)
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        tag = (group << 16) | elem
        pos += 8
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise NotLight("unexpected element inside a sequence")
        if length != UNDEFINED:
            pos += length
            continue
        pos = _walk(data, pos, explicit, until_item_end=True)[1]
    raise NotLight("sequence runs past the end of the file")


def _value_start(data: bytes, pos: int, explicit: bool) -> tuple[int, int]:
    """``(value length, value position)`` of the element whose tag starts at ``pos``: explicit VR
    (2- or 4-byte length by VR) or implicit VR / item delimiters (4-byte length)."""
    if explicit and struct.unpack_from("<H", data, pos)[0] != 0xFFFE:
        if data[pos + 4 : pos + 6] in LONG_VRS:
            return struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        return struct.unpack_from("<H", data, pos + 6)[0], pos + 8
    return struct.unpack_from("<I", data, pos + 4)[0], pos + 8


_ELEMENT = struct.Struct("<HH2sH")  # group, element, explicit VR, 2-byte length: one unpack a tag
_LENGTH = struct.Struct("<I")


def _walk(data: bytes, pos: int, explicit: bool, *, until_item_end: bool = False,
          values: dict[str, Any] | None = None) -> tuple[tuple[int, int] | None, int]:
    """Walk elements from ``pos``; collect known top-level values; return (pixel data span, end).

    The element header is read with one unpack (tag, VR and short length) and the checks are
    inlined: this loop runs for every element of every file, ~35 a CT slice.
    """
    end = len(data)
    element, length_at = _ELEMENT.unpack_from, _LENGTH.unpack_from
    collect = values is not None
    while pos + 8 <= end:
        group, elem, vr, short = element(data, pos)
        tag = (group << 16) | elem
        if tag == ITEM_END:
            return None, pos + 8
        if explicit and group != 0xFFFE:
            if vr in LONG_VRS:
                length, pos = length_at(data, pos + 8)[0], pos + 12
            else:
                length, pos = short, pos + 8
        else:  # implicit VR, or an item/delimiter: a 4-byte length after the tag
            length, pos = length_at(data, pos + 4)[0], pos + 8
        if collect:
            if tag in HEAVY_TAGS:
                raise NotLight(HEAVY_TAGS[tag])
            if tag == PIXEL_DATA:
                if length == UNDEFINED:
                    raise NotLight("encapsulated (compressed) pixel data")
                return (pos, min(length, end - pos)), pos + length
        if length == UNDEFINED:
            pos = _skip_sequence(data, pos, explicit)
            continue
        if pos + length > end:
            raise NotLight("element runs past the end of the file")
        if collect and tag in _BY_TAG:
            keyword, vr_name = _BY_TAG[tag]
            values[keyword] = _decode(data[pos : pos + length], vr_name)  # type: ignore[index]
        pos += length
    if until_item_end:
        raise NotLight("item runs past the end of the file")
    return None, pos


def parse(data: bytes) -> LightDataset:
    """Parse a whole file's bytes.

    Raises
    ------
    NotLight
        The file is not a single-frame, uncompressed, little-endian, ASCII-text image this
        reader reproduces exactly (the caller falls back to pydicom).
    """
    if len(data) < PREAMBLE + 4 or data[PREAMBLE : PREAMBLE + 4] != b"DICM":
        raise NotLight("no DICM preamble")
    pos = PREAMBLE + 4
    transfer_syntax = ""
    try:
        while pos + 8 <= len(data):  # file meta group: always explicit VR little endian
            group, elem = struct.unpack_from("<HH", data, pos)
            if group != 0x0002:
                break
            length, pos = _value_start(data, pos, explicit=True)
            if elem == 0x0010:
                transfer_syntax = _text(data[pos : pos + length])
            pos += length
        if transfer_syntax not in (IMPLICIT_LE, EXPLICIT_LE):
            raise NotLight(f"transfer syntax {transfer_syntax or 'missing'}")
        values: dict[str, Any] = {}
        span, _ = _walk(data, pos, transfer_syntax == EXPLICIT_LE, values=values)
    except struct.error:
        raise NotLight("truncated element") from None
    if span is None:
        raise NotLight("no pixel data")
    values["PixelData"] = True
    if int(values.get("NumberOfFrames") or 1) != 1 or int(values.get("SamplesPerPixel") or 1) != 1:
        raise NotLight("several frames or samples")
    if "Rows" not in values or "Columns" not in values:
        raise NotLight("no Rows/Columns")
    if str(values.get("PhotometricInterpretation") or "MONOCHROME2").strip() not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotLight("not monochrome (palette and colour go through pydicom's LUTs)")
    return LightDataset(values, transfer_syntax, span[0], span[1], data)
