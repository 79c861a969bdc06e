"""MedMNIST-layout ``.npz`` files: ``train_images``, ``train_labels``, ``val_*``, ``test_*``.

The study this tool builds on used MedMNIST, and ``medcondense export --format npz`` writes the
same layout, so such a file is ingested with its own splits kept. Class names come from, in
order: a ``classes.json`` beside the file (what our export writes: ``{"label": {"0": name}}``),
the ``medmnist`` package's ``INFO`` table when it is installed (its small wheel ships the names
offline; no data is downloaded), ``--class-names``. Multi-label sets (ChestMNIST: several 0/1
labels per image) and 3D sets (``[N, D, H, W]``) are refused with the reason: medcondense
distils one class per 2D image.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medcondense import store
from medcondense.errors import ConfigError, NoUsableInputError
from medcondense.ingest import dicom, window as win
from medcondense.ingest.images import image_window
from medcondense.ingest.resample import resample_slice

if TYPE_CHECKING:
    from medcondense.ingest.discover import Candidate
    from medcondense.ingest.pipeline import Context

log = logging.getLogger(__name__)

SPLIT_KEYS = {"train": store.SPLIT_TRAIN, "val": store.SPLIT_VAL, "test": store.SPLIT_TEST}
CLASSES_FILE = "classes.json"
MEDMNIST_HINT = "pip install medmnist"


@dataclass
class NpzSet:
    """The splits of one file: images float32 ``[N, H, W, C]`` in [0, 1], labels, split codes."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    class_names: list[str]
    names_from: str


def load(path: str | Path, class_names: list[str] | None = None) -> NpzSet:
    """Read and check a MedMNIST-layout file.

    Raises
    ------
    NoUsableInputError
        Not a readable npz, no ``*_images``/``*_labels`` pairs, a multi-label or 3D set.
    ConfigError
        No class names from any source, or fewer names than labels.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - not a zip, damaged, pickled objects
        raise NoUsableInputError(f"not a readable npz ({type(exc).__name__}: {str(exc)[:120]})", path=str(path)) from None
    with data:
        present = [s for s in SPLIT_KEYS if f"{s}_images" in data.files]
        if not present:
            raise NoUsableInputError(
                f"no MedMNIST arrays (train_images, train_labels, val_*, test_*); found {', '.join(data.files) or 'nothing'}",
                path=str(path))
        images, labels, codes = [], [], []
        for name in present:
            if f"{name}_labels" not in data.files:
                raise NoUsableInputError(f"{name}_images without {name}_labels", path=str(path))
            x, y = data[f"{name}_images"], data[f"{name}_labels"]
            x, y = _check_images(x, name, path), _check_labels(y, len(x), name, path)
            images.append(x)
            labels.append(y)
            codes.append(np.full(len(x), SPLIT_KEYS[name], dtype=np.uint8))
    shapes = {x.shape[1:] for x in images if len(x)}
    if len(shapes) > 1:
        raise NoUsableInputError(f"the splits hold images of different shapes {sorted(shapes)}", path=str(path))
    y = np.concatenate(labels)
    names, source = class_names_for(path, int(y.max()) + 1 if y.size else 0, class_names)
    return NpzSet(np.concatenate(images), y, np.concatenate(codes), names, source)


def _check_images(x: np.ndarray, split: str, path: Path) -> np.ndarray:
    """``[N, H, W]`` grey or ``[N, H, W, 3]`` RGB -> float32 ``[N, H, W, C]`` in [0, 1]; 3D refused."""
    if x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 4 and x.shape[-1] not in (1, 3):
        raise NoUsableInputError(
            f"{split}_images has shape {tuple(x.shape)}: a 3D set (volumes [N, D, H, W], as MedMNIST's *3d sets); "
            "medcondense ingests 2D images (export the slices as a folder of images or NIfTI instead)", path=str(path))
    elif x.ndim != 4:
        raise NoUsableInputError(f"{split}_images has shape {tuple(x.shape)}; expected [N, H, W] or [N, H, W, 3]",
                                 path=str(path))
    if x.dtype.kind in "iu":
        top = 255.0 if x.dtype.itemsize == 1 else 65535.0 if x.dtype.itemsize == 2 else float(np.iinfo(x.dtype).max)
        return x.astype(np.float32) / np.float32(top)
    if x.dtype.kind == "f":
        return x.astype(np.float32)
    raise NoUsableInputError(f"{split}_images has unsupported type {x.dtype}", path=str(path))


def _check_labels(y: np.ndarray, n: int, split: str, path: Path) -> np.ndarray:
    """``[N]`` or ``[N, 1]`` class indices -> int64 ``[N]``; multi-label ``[N, K]`` refused."""
    if y.ndim == 2 and y.shape[1] > 1:
        raise NoUsableInputError(
            f"{split}_labels has shape {tuple(y.shape)}: a multi-label set ({y.shape[1]} yes/no labels per image, "
            "as ChestMNIST); medcondense distils one class per image", path=str(path))
    y = y.reshape(-1)
    if len(y) != n:
        raise NoUsableInputError(f"{split}: {n} images but {len(y)} labels", path=str(path))
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise NoUsableInputError(f"{split}_labels are not class indices ({y.dtype})", path=str(path))
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise NoUsableInputError(f"{split}_labels hold negative values", path=str(path))
    return y


def class_names_for(path: Path, count: int, given: list[str] | None) -> tuple[list[str], str]:
    """Class names: ``classes.json`` beside the file, then medmnist's INFO, then ``--class-names``."""
    beside = path.with_name(CLASSES_FILE)
    names: list[str] | None = None
    source = ""
    if beside.is_file():
        names, source = _names_from_json(beside), CLASSES_FILE
    if names is None:
        names, source = _names_from_medmnist(path), "medmnist INFO"
    if names is None and given:
        names, source = list(given), "--class-names"
    if names is None:
        raise ConfigError(
            f"no class names for the {count} classes: put a {CLASSES_FILE} beside the file "
            f'({{"label": {{"0": "name", ...}}}}), install the medmnist package ({MEDMNIST_HINT}; its INFO '
            "table names the classes of the MedMNIST files), or pass --class-names a,b,c", path=str(path))
    if len(names) < count:
        raise ConfigError(f"{len(names)} class names ({source}) but labels up to {count - 1}", path=str(path))
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate class names ({source})", path=str(path))
    return names, source


def _names_from_json(path: Path) -> list[str]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"unreadable class names ({exc})", path=str(path)) from None
    table = content.get("label", content) if isinstance(content, dict) else content
    if isinstance(table, list):
        return [str(v) for v in table]
    if isinstance(table, dict) and all(str(k).isdigit() for k in table):
        return [str(table[k]) for k in sorted(table, key=int)]
    raise ConfigError('expected {"label": {"0": "name", ...}} or a list of names', path=str(path))


def _names_from_medmnist(path: Path) -> list[str] | None:
    """Names from medmnist's INFO for a file named like ``pathmnist.npz`` / ``pathmnist_64.npz``."""
    try:
        from medmnist import INFO
    except ImportError:
        return None
    flag = re.sub(r"_\d+$", "", path.stem.lower())
    info = INFO.get(flag)
    if not info:
        return None
    if "multi-label" in str(info.get("task", "")):
        return None  # refused by the label check anyway
    label = info.get("label") or {}
    return [str(label[k]) for k in sorted(label, key=int)]


def npz_task(args: tuple) -> np.ndarray:
    """Worker: ``[K, H, W, C]`` images -> ``[K, C', size, size]`` float32."""
    images, size, channels = args
    out = []
    for image in images:
        planes = [resample_slice(p, (1.0, 1.0), size) for p in dicom.to_channels(image, channels)]
        out.append(np.stack([p[0] for p in planes]))
    return np.stack(out) if out else np.zeros((0, 1, size, size), np.float32)


def ingest_npz(ctx: "Context", candidate: "Candidate") -> list[str]:
    """Collect every image of one MedMNIST-layout file (its splits kept); returns its class names."""
    from medcondense.ingest import deid

    cfg = ctx.config
    loaded = load(candidate.path, cfg.class_names)
    log.info("%s: %d images, class names from %s", Path(candidate.path).name, len(loaded.images), loaded.names_from)
    modality = cfg.modality or "OT"
    spec = image_window(ctx.options.window)
    name = Path(candidate.path).name
    split_names = {code: key for key, code in SPLIT_KEYS.items()}
    step = 256
    chunks = [(loaded.images[i : i + step], cfg.size, cfg.channels) for i in range(0, len(loaded.images), step)]
    counters = {code: 0 for code in split_names}
    out_spacing = float(max(loaded.images.shape[1:3])) / cfg.size  # 1 "mm" a source pixel
    index = 0
    for resized in ctx.mapper(npz_task, chunks):
        for image in resized:
            label, code = int(loaded.labels[index]), int(loaded.split[index])
            within = counters[code]
            counters[code] += 1
            ctx.windows[spec.name] += 1
            source = f"{name}#{split_names[code]}/{within}"
            ctx.out.add(
                win.apply_window(image, spec, tuple(cfg.percentiles)), label=loaded.class_names[label],
                patient=deid.keyed_hash("npz:" + source, "patient", ctx.secret), fixed=code,
                site=cfg.site or "",
                source=deid.keyed_hash(source, "path", ctx.secret) if cfg.hash_paths else source,
                series=deid.keyed_hash("npz:" + name, "series", ctx.secret), index=within,
                spacing=(out_spacing, out_spacing, 1.0),
            )
            ctx.out.modalities[modality] += 1
            index += 1
    ctx.out.units += 1
    used = int(loaded.labels.max()) + 1 if loaded.labels.size else 0
    return loaded.class_names[:used]
