"""NIfTI export: one 2D(+channel) image per sample, or one stack per class (``--stack``).

Voxel values are float32 modality values (Hounsfield units for a CT set with a recorded window,
see :mod:`medcondense.export.intensity`), and ``cal_min``/``cal_max`` hold the ingest window so
viewers open with it. Layout, so that a viewer shows the image as the PNG does:

- one image: data ``[W, H, 1]`` (grey) or ``[W, H, 1, C]``; ``data[i, j, 0] = image[H - 1 - j, i]``
  (column i runs right, row 0 at the top, hence the flip of j which runs up);
- a stack: data ``[W, H, K]`` (``[W, H, K, C]``), slice k = the k-th image of the class;
- affine ``diag(col spacing, row spacing, slice spacing)`` from meta/spacing (or the
  preprocessing spacing, else 1 mm), in RAS.

:func:`image_from_nifti_data` turns such data back into ``[C, H, W]``.

Beside ``nifti/``, ``dataset.json`` is a MONAI datalist in the Medical Segmentation Decathlon
style (``training``, ``validation``, ``test`` lists of ``{"image": "nifti/...", "label": k}``,
paths relative to the file, ``labels`` naming the classes; a split with no images has no list, as
MONAI's loader fails on an empty one), which
``monai.data.load_decathlon_datalist("dataset.json", is_segmentation=False)`` reads. With
``--stack`` (one file per class, no per-image file) no datalist is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medcondense.export.context import ExportContext, FormatResult

FOLDER = "nifti"
DATALIST_NAME = "dataset.json"
CHANNELS = None  # any channel count: channels go to the 4th dimension


def export(ctx: ExportContext, root: Path) -> FormatResult:
    """Write ``root/nifti/<class>/<class>_<k>.nii.gz`` (or ``root/nifti/<class>.nii.gz`` with stack)."""
    out = root / FOLDER
    values = ctx.intensity.to_modality(ctx.image_set.images).astype(np.float32)
    folders = ctx.class_dir_names()
    if ctx.stack:
        files = _write_stacks(ctx, values, folders, out)
    else:
        files = _write_images(ctx, values, folders, out)
        write_datalist(ctx, folders, root / DATALIST_NAME)
    notes = [f"values: {'modality units' if ctx.intensity.known else 'window space 0..1'} ({ctx.intensity.description})"]
    if not ctx.stack:
        notes.append(f"{DATALIST_NAME}: MONAI datalist")
    return FormatResult(FOLDER, files + (0 if ctx.stack else 1), notes)


def write_datalist(ctx: ExportContext, folders: list[str], path: Path) -> None:
    """``dataset.json`` (decathlon style) listing every image by split, paths relative to it."""
    from medcondense import store

    s = ctx.image_set
    lists: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    key = {store.SPLIT_TRAIN: "training", store.SPLIT_VAL: "validation", store.SPLIT_TEST: "test"}
    for name, label, code in zip(ctx.image_names(), s.labels.tolist(), s.split.tolist()):
        lists[key[code]].append({"image": f"{FOLDER}/{folders[label]}/{name}.nii.gz", "label": int(label)})
    kind = f"SYNTHETIC ({ctx.method})" if ctx.is_synthetic else f"{s.kind} images ({ctx.method})"
    doc = {
        "name": Path(ctx.input_name).stem,
        "description": f"medcondense export of {ctx.input_name}: {kind}; one 2D image per file, classification",
        "reference": "medcondense",
        "licence": ctx.license or "",
        "tensorImageSize": "3D",
        "modality": {"0": str(s.attrs.get("modality") or "OT")},
        "labels": {str(i): name for i, name in enumerate(s.class_names)},
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["test"]),
        **{key: items for key, items in lists.items() if items},  # MONAI fails on an empty list
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _write_images(ctx: ExportContext, values: np.ndarray, folders: list[str], out: Path) -> int:
    for index, (name, label) in enumerate(zip(ctx.image_names(), ctx.image_set.labels.tolist())):
        target = out / folders[label]
        target.mkdir(parents=True, exist_ok=True)
        data = nifti_data_from_images(values[index : index + 1])
        _save(data, ctx.spacing(index), ctx, target / f"{name}.nii.gz")
    return ctx.image_set.n


def _write_stacks(ctx: ExportContext, values: np.ndarray, folders: list[str], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for label, folder in enumerate(folders):
        index = np.flatnonzero(ctx.image_set.labels == label)
        if index.size == 0:
            continue
        _save(nifti_data_from_images(values[index]), ctx.spacing(int(index[0])), ctx, out / f"{folder}.nii.gz")
        written += 1
    return written


def nifti_data_from_images(images: np.ndarray) -> np.ndarray:
    """[K, C, H, W] -> [W, H, K] (one channel) or [W, H, K, C], rows flipped so j runs up."""
    data = np.transpose(images[:, :, ::-1, :], (3, 2, 0, 1))  # W, H, K, C
    return np.ascontiguousarray(data[..., 0] if data.shape[-1] == 1 else data)


def image_from_nifti_data(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nifti_data_from_images`: [W, H, K(, C)] -> [K, C, H, W]."""
    if data.ndim == 3:
        data = data[..., None]
    return np.ascontiguousarray(np.transpose(data, (2, 3, 1, 0))[:, :, ::-1, :])


def _save(data: np.ndarray, spacing: tuple[float, float, float], ctx: ExportContext, path: Path) -> None:
    import nibabel as nib

    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    image = nib.Nifti1Image(data.astype(np.float32), affine)
    header = image.header
    header.set_xyzt_units("mm")
    header.set_qform(affine, code=1)  # scanner-anchored, as far as a 2D patch can be
    header.set_sform(affine, code=1)
    if ctx.intensity.window is not None:
        centre, width = ctx.intensity.window
        header["cal_min"], header["cal_max"] = centre - width / 2.0, centre + width / 2.0
    kind = "SYNTHETIC " + ctx.method if ctx.is_synthetic else f"{ctx.image_set.kind} ({ctx.method})"
    header["descrip"] = f"medcondense {kind}"[:79].encode("ascii", "replace")
    nib.save(image, str(path))
