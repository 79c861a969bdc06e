"""Factorised image sets: each stored image holds ``factor**2`` smaller images (IDM's partitioning).

The one place that knows how a factorised file decodes. A stored image of ``H x W`` pixels is cut
into a ``factor x factor`` grid of tiles (row-major: top-left, top-right, ..., bottom-right); each
tile is upsampled by ``factor`` with bilinear interpolation (``align_corners=False``, the default
of ``torch.nn.functional.interpolate`` that IDM's ``number_sign_augment`` uses) into one decoded
image of ``H x W``. The decoded images of stored image ``i`` follow each other in the output and
carry its label, split and metadata, so the class order of a synthetic set is kept.

A factorised file records ``attrs["factorised"] = {"factor": f, "upsample": "bilinear",
"align_corners": False, "tile_order": "row-major"}`` and is written as schema ``medcondense/2``
(docs/format.md). ``ipc`` stays the *stored* count (equal storage, as in IDM's tables); a user
trains on ``ipc * factor**2`` decoded images a class.

Every reader that hands images to a user or a model (evaluate, score, export, merge) calls
:func:`decoded`; the distillation method calls :func:`decode_tensor` (differentiable) and
:func:`encode_tensor` (its initialisation). Both paths use the same interpolation matrix
(:func:`upsample_matrix`), so the images the method optimised are exactly the ones users get.
numpy only at import: export and the CLI need no torch for this.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from medcondense.errors import StoreError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: the root attribute of a factorised file
ATTR = "factorised"
#: how a tile is upsampled (the only mode so far; recorded so a later one can differ)
UPSAMPLE = "bilinear"


def describe(factor: int) -> dict[str, Any]:
    """The ``factorised`` attribute of a file whose images hold ``factor**2`` tiles each."""
    return {"factor": int(factor), "upsample": UPSAMPLE, "align_corners": False, "tile_order": "row-major"}


def factor_of(attrs: dict[str, Any], path: Any = None) -> int:
    """The factor a file's attributes record (1 for a plain file); StoreError when unreadable."""
    info = attrs.get(ATTR)
    if info is None:
        return 1
    factor = info.get("factor") if isinstance(info, dict) else None
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise StoreError(f"unreadable 'factorised' attribute {info!r}", path=path)
    if info.get("upsample", UPSAMPLE) != UPSAMPLE or info.get("tile_order", "row-major") != "row-major":
        raise StoreError(f"factorised with {info!r}; this version decodes bilinear, row-major tiles only",
                         path=path, hint="upgrade medcondense")
    return factor


def upsample_matrix(tile: int, factor: int) -> np.ndarray:
    """The [tile*factor, tile] matrix of 1-D bilinear upsampling by ``factor`` (align_corners=False).

    Output pixel ``o`` samples the input at ``(o + 0.5) / factor - 0.5``, clamped to the edges,
    exactly as ``torch.nn.functional.interpolate(..., mode="bilinear")`` does.
    """
    out = tile * factor
    source = np.maximum((np.arange(out) + 0.5) / factor - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), tile - 1)
    high = np.minimum(low + 1, tile - 1)
    weight_high = source - low
    matrix = np.zeros((out, tile), dtype=np.float64)
    np.add.at(matrix, (np.arange(out), low), 1.0 - weight_high)
    np.add.at(matrix, (np.arange(out), high), weight_high)
    return matrix.astype(np.float32)


def _check_size(height: int, width: int, factor: int) -> None:
    if height != width or height % factor:
        raise StoreError(f"images of {height}x{width} px cannot hold {factor}x{factor} tiles "
                         "(square images whose side is a multiple of the factor)")


def decode_array(images: np.ndarray, factor: int) -> np.ndarray:
    """Stored images [N, C, H, W] -> decoded images [N * factor**2, C, H, W] (numpy)."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    _check_size(h, w, factor)
    tile = h // factor
    m = upsample_matrix(tile, factor)
    tiles = images.reshape(n, c, factor, tile, factor, tile).transpose(0, 2, 4, 1, 3, 5)  # n, fy, fx, c, t, t
    up = np.einsum("ot,nyxcts,ps->nyxcop", m, tiles.astype(np.float32), m, optimize=True)
    return np.ascontiguousarray(up.reshape(n * factor * factor, c, h, w), dtype=np.float32)


def decode_tensor(images: "torch.Tensor", factor: int) -> "torch.Tensor":
    """The differentiable torch twin of :func:`decode_array` (same matrix, same order)."""
    import torch

    if factor == 1:
        return images
    n, c, h, w = images.shape
    _check_size(h, w, factor)
    tile = h // factor
    m = torch.as_tensor(upsample_matrix(tile, factor), device=images.device, dtype=images.dtype)
    tiles = images.reshape(n, c, factor, tile, factor, tile).permute(0, 2, 4, 1, 3, 5)
    up = torch.einsum("ot,nyxcts,ps->nyxcop", m, tiles, m)
    return up.reshape(n * factor * factor, c, h, w)


def encode_tensor(images: "torch.Tensor", factor: int) -> "torch.Tensor":
    """``factor**2`` consecutive images [N*f*f, C, H, W] -> stored images [N, C, H, W].

    Each image is downsampled by ``factor`` (area averaging, IDM's ``downscale``) into one tile,
    in row-major tile order, so ``decode_tensor(encode_tensor(x))`` is a blurred ``x`` with the
    same shapes, labels and counts.
    """
    import torch.nn.functional as F

    if factor == 1:
        return images
    total, c, h, w = images.shape
    _check_size(h, w, factor)
    if total % (factor * factor):
        raise ValueError(f"{total} images do not fill stored images of {factor * factor} tiles")
    tile = h // factor
    small = F.avg_pool2d(images, kernel_size=factor)  # [N*f*f, C, t, t]
    grid = small.reshape(total // (factor * factor), factor, factor, c, tile, tile).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(total // (factor * factor), c, h, w).contiguous()


def decoded(image_set: Any) -> Any:
    """The set a user trains on: a factorised :class:`~medcondense.store.ImageSet` decoded, any
    other set unchanged. Labels, split and per-image metadata repeat ``factor**2`` times; the
    result records ``decoded_from = {"factor": f, "stored_images": n}`` instead of ``factorised``."""
    factor = factor_of(image_set.attrs)
    if factor == 1:
        return image_set
    repeat = factor * factor
    attrs = {k: v for k, v in image_set.attrs.items() if k != ATTR}
    attrs["decoded_from"] = {"factor": factor, "stored_images": image_set.n}
    return dataclasses.replace(
        image_set,
        images=decode_array(np.asarray(image_set.images, dtype=np.float32), factor),
        labels=np.repeat(image_set.labels, repeat),
        split=np.repeat(image_set.split, repeat),
        meta={k: np.repeat(v, repeat, axis=0) for k, v in image_set.meta.items()},
        attrs=attrs,
    )
