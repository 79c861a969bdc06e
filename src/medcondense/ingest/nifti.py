"""NIfTI: canonical (RAS+) volumes sliced along one axis.

Volumes are reoriented with ``nib.as_closest_canonical``; slices along ``--axis`` (0 sagittal,
1 coronal, 2 axial) are rotated 90 degrees so that anterior/superior is up. A 4D image gives one
volume per time point (each its own unit, ``channels=grey``) or one multi-channel volume
(``channels=keep``: each time point/contrast a channel). An optional mask beside the image keeps
only the slices the mask touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class NiftiVolume:
    """Slices of one NIfTI volume: images ``[S, C, size, size]`` in stored units, their indices."""

    images: np.ndarray
    slice_index: list[int]
    spacing: tuple[float, float, float]
    volume: int
    nonfinite: int = 0  # NaN/Inf voxels of the source volume, replaced before resampling


def fill_nonfinite(data: np.ndarray) -> tuple[np.ndarray, int] | str:
    """Replace NaN/Inf voxels by the smallest finite value (background) before resampling, where
    interpolation would spread them over the whole slice; return the data and how many there
    were, or the reason the volume cannot be used (no finite voxel at all)."""
    finite = np.isfinite(data)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad == 0:
        return data, 0
    if bad == finite.size:
        return "no finite voxel (every value is NaN or Inf)"
    return np.where(finite, data, data[finite].min()).astype(np.float32, copy=False), bad


def load_canonical(path: str):
    """Load a NIfTI image reoriented to RAS+ (data stays lazy until read)."""
    import nibabel as nib

    return nib.as_closest_canonical(nib.load(path))


def plane_spacing(zooms: tuple[float, ...], axis: int) -> tuple[float, float, float]:
    """(row, column, slice) spacing of slices along ``axis`` after the 90-degree rotation."""
    a, b = [i for i in range(3) if i != axis]
    return float(zooms[b]), float(zooms[a]), float(zooms[axis])


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One 2D slice along ``axis``, rotated so that anterior/superior is up."""
    return np.rot90(np.take(volume, index, axis=axis))


def mask_slices(mask: np.ndarray, axis: int) -> list[int]:
    """Indices along ``axis`` where the mask has any non-zero voxel."""
    other = tuple(i for i in range(mask.ndim) if i != axis)
    return [int(i) for i in np.flatnonzero(np.any(mask != 0, axis=other))]
