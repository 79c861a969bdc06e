"""PNG export: one PNG per image in a folder per class, ``metadata.csv``, and a class-by-image grid.

The ``png/`` folder is laid out as torchvision's ``ImageFolder`` and Hugging Face's
``imagefolder`` expect: nothing but class folders and ``metadata.csv`` (``file_name`` relative to
``png/``, ``class_index``, ``class_name``, ``split``; no column named ``label``, which would clash
with the label ``imagefolder`` infers from the folders). The grid is written beside ``png/``
(``grid.png`` in the export folder): inside it would become a class (torchvision) or, being one
level higher than the images, make ``imagefolder`` drop the labels.

Grey values are the set's display range: the ingest window (0 = window bottom, top = window top)
or, without a window, the set's 0.5-99.5 percentile range (see :meth:`IntensityMap.to_display`).
``--png-bits 16`` writes 16-bit grey PNGs (0..65535) for sets whose values 8 bits would
quantise. The grid shows at most :data:`GRID_MAX_PER_CLASS` images per class.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from medcondense import store
from medcondense.errors import ConfigError
from medcondense.export.context import ExportContext, FormatResult, channels_last, to_uint8

log = logging.getLogger(__name__)

FOLDER = "png"
BITS = (8, 16)
METADATA_NAME = "metadata.csv"
GRID_NAME = "grid.png"  # in the export folder, beside png/
GRID_MAX_PER_CLASS = 10
GRID_CELL_INCHES = 0.9
CHANNELS = (1, 3)  # grey or RGB; other channel counts go to NIfTI


def check_bits(bits: int, channels: int) -> None:
    """ConfigError for a bit depth PNG export cannot write (16 bits: grey images only)."""
    if bits not in BITS:
        raise ConfigError(f"--png-bits must be 8 or 16, got {bits}")
    if bits == 16 and channels != 1:
        raise ConfigError(f"--png-bits 16 writes grey images; this set has {channels} channels "
                          "(use --png-bits 8, or --format nifti for full precision)")


def export(ctx: ExportContext, root: Path) -> FormatResult:
    """Write ``root/png/<class>/<class>_<k>.png`` for every image, ``root/png/metadata.csv`` and
    ``root/grid.png``."""
    from PIL import Image

    out = root / FOLDER
    s = ctx.image_set
    check_bits(ctx.png_bits, s.image_shape[0])
    display = ctx.intensity.to_display(s.images)
    pixels8 = channels_last(to_uint8(display))
    pixels = channels_last(to_uint16(display)) if ctx.png_bits == 16 else pixels8
    folders = ctx.class_dir_names()
    rows = []
    for name, label, code, pix in zip(ctx.image_names(), s.labels.tolist(), s.split.tolist(), pixels):
        target = out / folders[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pix).save(target / f"{name}.png")  # uint8 -> L / RGB, uint16 -> I;16
        rows.append((f"{folders[label]}/{name}.png", label, s.class_names[label], store.SPLIT_NAMES[code]))
    write_metadata(out / METADATA_NAME, rows)
    write_grid(pixels8, s.labels, s.class_names, root / GRID_NAME, title=_grid_title(ctx))
    notes = [] if ctx.intensity.window_applied else ["grey scale: the set's 0.5-99.5 percentile range"]
    if ctx.png_bits == 16:
        notes.append("16-bit grey PNGs (0..65535)")
    return FormatResult(FOLDER, s.n + 2, notes)


def to_uint16(display: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint16 0..65535 (rounded)."""
    return np.round(np.clip(display, 0.0, 1.0) * 65535.0).astype(np.uint16)


def write_metadata(path: Path, rows: list[tuple[str, int, str, str]]) -> None:
    """``metadata.csv`` as Hugging Face ``imagefolder`` reads it (``file_name`` first)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "class_index", "class_name", "split"])
        writer.writerows(rows)


def _grid_title(ctx: ExportContext) -> str:
    s = ctx.image_set
    if ctx.is_synthetic:
        return f"SYNTHETIC: {ctx.method}, {s.attrs.get('ipc', '?')} images per class"
    return f"{s.kind} set ({ctx.method}): up to {GRID_MAX_PER_CLASS} images per class"


def write_grid(pixels: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path, *, title: str) -> None:
    """A class-by-image grid (rows = classes, named) saved with matplotlib's Agg canvas.

    Parameters
    ----------
    pixels : uint8 [N, H, W] or [N, H, W, 3]
    labels : class index per image
    class_names : row labels
    path : where the PNG goes
    title : figure title
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = len(class_names)
    per_class = [np.flatnonzero(labels == k)[:GRID_MAX_PER_CLASS] for k in range(rows)]
    cols = max(1, max((len(idx) for idx in per_class), default=1))
    # Figure + Agg canvas, not pyplot: no global backend state, safe in threads and without a display
    fig = Figure(figsize=(1.6 + cols * GRID_CELL_INCHES, 0.5 + rows * GRID_CELL_INCHES), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, idx in enumerate(per_class):
        for j in range(cols):
            ax = axes[k, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(idx):
                ax.imshow(pixels[idx[j]], cmap="gray" if pixels.ndim == 3 else None, vmin=0, vmax=255,
                          interpolation="nearest")
        axes[k, 0].set_ylabel(class_names[k], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path)
    log.debug("wrote %s (%d classes x %d)", path, rows, cols)
