"""Plain image folders: PNG, JPEG and TIFF (8- and 16-bit, grey and RGB), read with Pillow.

Dermatology and pathology sets come as folders of photographs, not DICOM. Files are recognised by
content (the PNG, JPEG or TIFF signature; a file with the DICOM marker is DICOM whatever its
name), labelled like DICOM (labels CSV, else the first folder level), scaled to [0, 1]
(8-bit / 255, 16-bit / 65535) and resampled like every slice. 16-bit RGB TIFF, which Pillow
would quietly cut to 8 bits, is read with ``tifffile`` (the ``tiff`` extra). There are no DICOM
tags: each image is its own patient unless the labels CSV gives a patient column.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medcondense.ingest import dicom, window as win
from medcondense.ingest.resample import resample_slice

if TYPE_CHECKING:
    from medcondense.ingest.discover import Candidate
    from medcondense.ingest.pipeline import Context

log = logging.getLogger(__name__)

SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",  # BigTIFF
    b"MM\x00+": "TIFF",
}
ZIP_SIGNATURE = b"PK\x03\x04"
TIFF_HINT = 'pip install "medcondense[tiff]"'
# what [0, 1] image values are windowed with when --window is auto/voi: the identity
IMAGE_RANGE = win.WindowSpec("fixed", 0.5, 1.0, "image range 0-1")


def sniff(path: Path) -> str | None:
    """``dicom`` for the DICM marker (whatever else the file looks like: DICOM-TIFF dual files are
    DICOM), ``image`` for a PNG/JPEG/TIFF signature, ``npz`` for a ``.npz`` zip, else None."""
    try:
        with open(path, "rb", buffering=0) as f:  # 132 bytes, not a buffer's 8 KB (once per input file)
            head = f.read(132)
    except OSError:
        return None
    if head[128:132] == b"DICM":
        return "dicom"
    if any(head.startswith(sig) for sig in SIGNATURES):
        return "image"
    if head.startswith(ZIP_SIGNATURE) and path.name.lower().endswith(".npz"):
        return "npz"
    return None


def format_of(path: str | Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    return next((name for sig, name in SIGNATURES.items() if head.startswith(sig)), "image")


def read_image(path: str) -> np.ndarray:
    """Pixels as float32 ``[rows, cols, samples]`` in [0, 1] (alpha dropped, palette expanded).

    Raises
    ------
    ValueError
        The reason the file cannot be used (truncated, an unsupported mode, 16-bit RGB TIFF
        without tifffile); the message is the reject reason.
    """
    kind = format_of(path)
    if kind == "TIFF":
        arr = _read_tiff(path)
    else:
        arr = _read_pillow(path, kind)
    return _to_unit(arr, path)


def _read_pillow(path: str, kind: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                log.debug("%s: %d frames, reading the first", path, im.n_frames)
            im.load()
            mode = im.mode
            if kind == "TIFF":
                bits = im.tag_v2.get(258)  # BitsPerSample
                if isinstance(bits, tuple) and len(bits) >= 3 and max(bits) > 8:
                    raise ValueError(f"16-bit RGB TIFF: Pillow would cut it to 8 bits; install `{TIFF_HINT}`")
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
            elif mode == "1":
                im = im.convert("L")
            return np.asarray(im)
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError(f"not a readable {kind} image (Pillow cannot identify it)") from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text:
            raise ValueError(f"truncated {kind} image: the file ends before its pixel data does") from None
        raise ValueError(f"damaged {kind} image ({text[:120]})") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject
        raise ValueError(f"cannot decode the {kind} image ({type(exc).__name__}: {str(exc)[:120]})") from None


def _read_tiff(path: str) -> np.ndarray:
    try:
        import tifffile
    except ImportError:
        return _read_pillow(path, "TIFF")
    try:
        arr = tifffile.imread(path, key=0)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read the TIFF ({type(exc).__name__}: {str(exc)[:120]})") from None
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (separate) configuration
    return arr


def _to_unit(arr: np.ndarray, path: str) -> np.ndarray:
    """Integer pixels to [0, 1] by their type's range; floats kept; alpha dropped."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {tuple(arr.shape)} (expected grey or RGB)")
    if arr.shape[-1] in (2, 4):  # LA / RGBA: alpha is not image content
        arr = arr[..., : arr.shape[-1] - 1]
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype.kind in "iu":
        top = 255.0 if arr.dtype.itemsize == 1 else 65535.0 if arr.dtype.itemsize == 2 else float(np.iinfo(arr.dtype).max)
        return (arr.astype(np.float32) / np.float32(top)).astype(np.float32)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    raise ValueError(f"unsupported pixel type {arr.dtype}")


def image_task(args: tuple) -> tuple[np.ndarray, float] | str:
    """Worker: one image file -> ([C, size, size] float32 in [0, 1] units, output spacing) or a reason."""
    path, size, channels = args
    try:
        pixels = read_image(path)
        planes = [resample_slice(p, (1.0, 1.0), size) for p in dicom.to_channels(pixels, channels)]
        return np.stack([p[0] for p in planes]), planes[0][1]
    except ValueError as exc:
        return str(exc)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad file must become a reject, not a crash
        return f"cannot process the image ({type(exc).__name__})"


def image_window(spec: win.WindowSpec) -> win.WindowSpec:
    """The window for [0, 1] image values: the identity unless a fixed or percentile window was asked for."""
    return IMAGE_RANGE if spec.kind in ("auto", "voi") else spec


def ingest_images(ctx: "Context", candidates: list["Candidate"]) -> None:
    """Read, resample, window and collect plain images (one file a task)."""
    from medcondense.ingest import deid
    from medcondense.ingest.pipeline import file_facts, source_of

    cfg = ctx.config
    todo = []
    for c in candidates:
        facts = file_facts(ctx, c.path, c.root, None)
        if facts is not None:
            todo.append((c, facts, (c.path, cfg.size, cfg.channels)))
    modality = cfg.modality or "OT"
    spec = image_window(ctx.options.window)
    chunk = max(1, len(todo) // (8 * cfg.workers))
    for (c, (label, row), _), result in zip(todo, ctx.mapper(image_task, [t for *_, t in todo], chunksize=chunk)):
        if isinstance(result, str):
            ctx.rejects.add(c.path, result)
            continue
        image, out_spacing = result
        ctx.windows[spec.name] += 1
        image = win.apply_window(image, spec, tuple(cfg.percentiles))
        rel = deid.relative_source(c.path, c.root)
        patient = ("csv:" + row.patient) if row is not None and row.patient else "file:" + rel
        ctx.out.add(
            image, label=label, patient=deid.keyed_hash(patient, "patient", ctx.secret),
            fixed=row.split if row is not None else None,
            site=(row.site if row is not None and row.site else None) or cfg.site or "",
            source=source_of(ctx, c.path, c.root),
            series=deid.keyed_hash(str(Path(c.path).resolve()), "series", ctx.secret),
            index=0, spacing=(out_spacing, out_spacing, 1.0),
        )
        ctx.out.modalities[modality] += 1
        ctx.out.units += 1


INPUT_FORMATS = ("auto", "dicom", "images", "npz")
_GROUPS = {"dicom": ("dicom", "nifti"), "images": ("image",), "npz": ("npz",)}


def choose_inputs(candidates: list["Candidate"], input_format: str) -> list["Candidate"]:
    """The candidates of one input format.

    ``auto`` takes whatever is there but refuses a mix (DICOM exports often carry thumbnails or
    screenshots: silently training on those would be wrong either way); ``dicom`` (DICOM and
    NIfTI), ``images`` (PNG/JPEG/TIFF) and ``npz`` keep their kind and ignore the rest.

    Raises
    ------
    ConfigError
        An unknown format, a mix under ``auto`` (naming both counts), several npz files.
    """
    from collections import Counter

    from medcondense.errors import ConfigError

    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"unknown --input-format {input_format!r}; expected {', '.join(INPUT_FORMATS)}")
    counts = Counter(c.kind for c in candidates)
    if input_format == "auto":
        groups = [g for g, kinds in _GROUPS.items() if any(counts.get(k) for k in kinds)]
        if len(groups) > 1:
            raise ConfigError(
                f"the inputs hold {describe(counts)} files; choose what to read with --input-format "
                f"{' or '.join(groups)} (DICOM exports often carry thumbnails)")
        chosen = candidates
    else:
        chosen = [c for c in candidates if c.kind in _GROUPS[input_format]]
        ignored = Counter(c.kind for c in candidates if c.kind not in _GROUPS[input_format])
        if ignored:
            log.info("--input-format %s: ignoring %s files", input_format, describe(ignored))
    npz_files = [c for c in chosen if c.kind == "npz"]
    if len(npz_files) > 1:
        raise ConfigError(f"{len(npz_files)} npz files given; ingest one MedMNIST-style npz at a time")
    return chosen


def describe(counts: dict[str, Any]) -> str:
    """``"3 DICOM, 2 NIfTI"`` from kind counts (kinds with no files left out)."""
    names = {"dicom": "DICOM", "nifti": "NIfTI", "image": "PNG/JPEG/TIFF", "npz": "npz"}
    return ", ".join(f"{counts[k]} {names.get(k, k)}" for k in names if counts.get(k))
