"""Read each DICOM file once: header, content digest and (for single-frame files) the small image.

The two-pass reading (all headers, then the pixels of the files kept) parsed every file twice.
Here a worker reads a file's bytes once, hashes them for the run key, parses them (the light
reader of :mod:`medcondense.ingest.dicomfast` for plain uncompressed files, pydicom for the rest),
and, when asked, decodes and shrinks a single-frame image at once, so only a ``size x size``
float32 image per file is kept. Multi-frame files are only parsed here: their frames are decoded
later, as selected by ``--slices``.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from medcondense.ingest import dicom, dicomfast
from medcondense.ingest.resample import resample_slice
from medcondense.runkey import content_digest


@dataclass
class FileRead:
    """What one read of one file gives: its header, digest, and the shrunk frames (or None)."""

    header: dicom.Header
    digest: str
    images: list[np.ndarray] | None = None
    out_spacing: float = 1.0
    error: str | None = None  # decoding failed: the reject reason (the header is still good)


def load_file(path: str) -> tuple[bytes | None, str]:
    """A file's bytes and content digest (:func:`medcondense.runkey.content_digest`), or (None, reason)."""
    try:
        with open(path, "rb", buffering=0) as f:  # one read of the whole file: no buffer between
            data = f.read()
    except OSError as exc:
        return None, f"cannot read the file ({exc.strerror or type(exc).__name__})"
    return data, content_digest(data)


def read_file_task(args: tuple, loaded: tuple[bytes | None, str] | None = None) -> FileRead | tuple[str, str]:
    """Worker: ``(path, root, label_tag, decode, size, target, channels, allow_burned_in)`` ->
    :class:`FileRead`, or ``(reason, digest)`` when the file is not a usable image."""
    path, root, label_tag, decode, size, target, channels, allow_burned_in = args
    data, digest = loaded if loaded is not None else load_file(path)
    if data is None:
        return digest, ""
    if label_tag is None:
        try:
            light = dicomfast.parse(data)
            header = dicom.header_from(light, path, root, None, allow_burned_in=allow_burned_in)
            if isinstance(header, str):
                return header, digest
            read = FileRead(header, digest)
            if decode:
                out, read.out_spacing = resample_slice(light.pixels(), header.pixel_spacing, size, target,
                                                       rescale=light.rescale)
                read.images = [out[None]]
            return read
        except dicomfast.NotLight:
            pass
        except Exception:  # noqa: BLE001 - pydicom below gives the precise reason
            pass
    return _read_with_pydicom(data, path, root, label_tag, decode, size, target, channels, digest, allow_burned_in)


def _read_with_pydicom(data: bytes, path: str, root: str, label_tag: str | None, decode: bool, size: int,
                       target: float | None, channels: str, digest: str,
                       allow_burned_in: bool = False) -> FileRead | tuple[str, str]:
    import pydicom

    try:
        ds = pydicom.dcmread(BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a reject
        return f"unreadable DICOM ({type(exc).__name__}); the file may be truncated or damaged", digest
    try:
        header = dicom.header_from(ds, path, root, label_tag, allow_burned_in=allow_burned_in)
    except Exception as exc:  # noqa: BLE001 - malformed values
        return f"malformed DICOM header ({type(exc).__name__})", digest
    if isinstance(header, str):
        return header, digest
    read = FileRead(header, digest)
    if decode and header.frames == 1:
        try:
            frame = dicom.frames_from(ds)[0]
            planes = [resample_slice(p, header.pixel_spacing, size, target) for p in dicom.to_channels(frame, channels)]
            read.images = [np.stack([p[0] for p in planes])]
            read.out_spacing = planes[0][1]
        except dicom.DecodeError as exc:
            read.error = str(exc)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad file must become a reject, not a crash
            read.error = f"cannot process the pixel data ({type(exc).__name__})"
    return read


def read_all(args: list[tuple], mapper: Callable[..., Iterable[Any]], workers: int) -> Iterator[FileRead | tuple[str, str]]:
    """:func:`read_file_task` over ``args`` in order, in worker processes with ``--workers``.

    (A thread reading and hashing ahead was tried for the serial case: hashlib releases the GIL,
    but the GIL hand-offs cost more CPU than they saved on a loaded 2-core machine.)
    """
    if workers > 1:
        yield from mapper(read_file_task, args, chunksize=max(1, len(args) // (8 * workers)))
        return
    for task in args:
        yield read_file_task(task)
