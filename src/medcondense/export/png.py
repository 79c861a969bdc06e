"""PNG export: one 8-bit PNG per image in a folder per class, and a class-by-image grid.

Grey values are the set's display range: the ingest window (0 = window bottom, 255 = top) or,
without a window, the set's 0.5-99.5 percentile range (see :meth:`IntensityMap.to_display`).
The grid shows at most :data:`GRID_MAX_PER_CLASS` images per class (a real set has thousands).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medcondense.export.context import ExportContext, FormatResult, channels_last, to_uint8

log = logging.getLogger(__name__)

FOLDER = "png"
GRID_NAME = "grid.png"
GRID_MAX_PER_CLASS = 10
GRID_CELL_INCHES = 0.9
CHANNELS = (1, 3)  # grey or RGB; other channel counts go to NIfTI


def export(ctx: ExportContext, root: Path) -> FormatResult:
    """Write ``root/png/<class>/<class>_<k>.png`` for every image and ``root/png/grid.png``."""
    from PIL import Image

    out = root / FOLDER
    images = ctx.image_set.images
    pixels = channels_last(to_uint8(ctx.intensity.to_display(images)))
    folders = ctx.class_dir_names()
    for name, label, pix in zip(ctx.image_names(), ctx.image_set.labels.tolist(), pixels):
        target = out / folders[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pix, mode="L" if pix.ndim == 2 else None).save(target / f"{name}.png")
    write_grid(pixels, ctx.image_set.labels, ctx.image_set.class_names, out / GRID_NAME, title=_grid_title(ctx))
    notes = [] if ctx.intensity.window_applied else ["grey scale: the set's 0.5-99.5 percentile range"]
    return FormatResult(FOLDER, ctx.image_set.n + 1, notes)


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
