"""In-plane geometry: resample to a spacing, centre pad to a square, resize to the output size.

The three steps are done as one SimpleITK resampling of each 2D slice (one interpolation, not
three): the output grid is ``size x size`` pixels covering a centred square whose side is the
longer side of the image (after rounding to ``--spacing`` when given), so nothing is cropped and
the shorter side is padded with the image minimum. Images use linear interpolation; when shrinking
by 2x or more they are first block-averaged by the integer factor (an area anti-alias, much
cheaper than a Gaussian on a 512x512 slice). Masks use nearest neighbour. SimpleITK runs one
thread per process: slices are small, and ``--workers`` parallelizes across files instead.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def square_side_mm(shape: tuple[int, int], spacing: tuple[float, float], target: float | None) -> float:
    """Side in mm of the centred square that holds the whole slice (rows x cols at ``spacing``)."""
    extent = [n * s for n, s in zip(shape, spacing)]
    if target:
        return max(max(1, round(e / target)) for e in extent) * float(target)
    return float(max(extent))


def block_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks (edges padded by repetition to a multiple of ``factor``)."""
    rows, cols = arr.shape
    pad = (-rows % factor, -cols % factor)
    if any(pad):
        arr = np.pad(arr, ((0, pad[0]), (0, pad[1])), mode="edge")
    r, c = arr.shape
    return arr.reshape(r // factor, factor, c // factor, factor).mean(axis=(1, 3), dtype=np.float32)


def _single_thread() -> None:
    if sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() != 1:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def resample_slice(
    image: np.ndarray,
    spacing: tuple[float, float],
    size: int,
    target: float | None = None,
    *,
    mask: bool = False,
) -> tuple[np.ndarray, float]:
    """Resample one 2D slice ``[rows, cols]`` onto a ``size x size`` square.

    Parameters
    ----------
    image : 2D array in modality units (any numeric dtype)
    spacing : (row spacing, column spacing) in mm
    size : output side in pixels
    target : in-plane spacing to resample to first (mm), or None to keep the native spacing
    mask : nearest-neighbour interpolation and zero padding (for label masks)

    Returns
    -------
    out : float32 [size, size]
    out_spacing : the spacing of the output pixels in mm (the same along both axes)
    """
    arr = np.ascontiguousarray(image, dtype=np.float32)
    sy, sx = (float(s) if s and s > 0 else 1.0 for s in spacing)
    side = square_side_mm(arr.shape, (sy, sx), target)
    out_spacing = side / size
    _single_thread()
    # centre of the slice in physical space (pixel centres at index * spacing)
    cx, cy = (arr.shape[1] - 1) * sx / 2.0, (arr.shape[0] - 1) * sy / 2.0
    origin = (cx - (size - 1) * out_spacing / 2.0, cy - (size - 1) * out_spacing / 2.0)
    factor = max(1, int(out_spacing / max(sx, sy))) if not mask else 1
    pad = 0.0 if mask else float(arr.min()) if arr.size else 0.0
    if factor >= 2:
        arr = block_mean(arr, factor)
    src = sitk.GetImageFromArray(arr)
    src.SetSpacing((sx * factor, sy * factor))
    src.SetOrigin(((factor - 1) * sx / 2.0, (factor - 1) * sy / 2.0))
    interp = sitk.sitkNearestNeighbor if mask else sitk.sitkLinear
    out = sitk.Resample(
        src, (size, size), sitk.Transform(), interp, origin, (out_spacing, out_spacing),
        (1.0, 0.0, 0.0, 1.0), pad, sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out), out_spacing
