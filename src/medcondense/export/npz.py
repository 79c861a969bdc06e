"""npz export in MedMNIST's layout, so code written for MedMNIST trains on the set unchanged.

One file ``npz/<input stem>.npz`` holding ``train_images``, ``train_labels``, ``val_images``,
``val_labels``, ``test_images`` and ``test_labels``: images uint8 ``[N, H, W]`` (grey) or
``[N, H, W, 3]`` (RGB) in the set's display range (as the PNGs), labels uint8 ``[N, 1]``
(int64 for more than 255 classes). A split with no images gets empty arrays of the right shape,
as MedMNIST loaders index all six keys. ``npz/classes.json`` maps label index -> class name
(MedMNIST keeps this in its INFO table).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medcondense import store
from medcondense.export.context import ExportContext, FormatResult, channels_last, to_uint8

FOLDER = "npz"
CHANNELS = (1, 3)  # MedMNIST is grey [N, H, W] or RGB [N, H, W, 3]


def export(ctx: ExportContext, root: Path) -> FormatResult:
    """Write ``root/npz/<stem>.npz`` and ``root/npz/classes.json``."""
    out = root / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    s = ctx.image_set
    pixels = channels_last(to_uint8(ctx.intensity.to_display(s.images)))
    label_dtype = np.uint8 if s.num_classes <= 256 else np.int64
    arrays: dict[str, np.ndarray] = {}
    for code, split_name in store.SPLIT_NAMES.items():
        mask = s.split == code
        arrays[f"{split_name}_images"] = np.ascontiguousarray(pixels[mask])
        arrays[f"{split_name}_labels"] = s.labels[mask].astype(label_dtype).reshape(-1, 1)
    stem = Path(ctx.input_name).stem or "data"
    np.savez_compressed(out / f"{stem}.npz", **arrays)
    classes = {str(i): name for i, name in enumerate(s.class_names)}
    (out / "classes.json").write_text(json.dumps({"label": classes}, indent=2) + "\n", encoding="utf-8")
    counts = {name: int((s.split == code).sum()) for code, name in store.SPLIT_NAMES.items()}
    return FormatResult(FOLDER, 2, [f"{stem}.npz: " + ", ".join(f"{k} {v}" for k, v in counts.items())])
