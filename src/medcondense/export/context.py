"""What every exporter gets: the set, where it came from, the options, and shared helpers.

The exporters (:mod:`png`, :mod:`nifti`, :mod:`dicom`, :mod:`npz`, :mod:`card`) each write one
sub-folder of the export folder and return a :class:`FormatResult`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medcondense import store
from medcondense.export.intensity import IntensityMap, intensity_map

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class ExportContext:
    """One export run.

    Parameters
    ----------
    image_set : the set read from the input file
    input_name : the input file's name (no folders: those may hold patient names)
    digest : content hash of the set
    stack : NIfTI: one stack per class instead of one file per image
    uid_root : DICOM UID root, ending in a dot
    reports : evaluate/score reports given with ``--report`` (parsed JSON, by file name)
    license : licence text for the data card
    png_bits : 8 or 16 (grey only) bits per PNG sample
    results : what the exporters run so far wrote, by format (the data card lists them)
    """

    image_set: store.ImageSet
    input_name: str
    digest: str
    stack: bool = False
    uid_root: str | None = None
    reports: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    png_bits: int = 8
    results: dict[str, "FormatResult"] = field(default_factory=dict)
    intensity: IntensityMap = field(init=False)

    def __post_init__(self) -> None:
        self.intensity = intensity_map(self.image_set.attrs, self.image_set.image_shape[0])

    @property
    def is_synthetic(self) -> bool:
        """Only kind ``synthetic`` is ever called synthetic; a subset is real images."""
        return self.image_set.kind == "synthetic"

    @property
    def method(self) -> str:
        """The distillation or coreset method, or ``ingest`` for a real set."""
        return str(self.image_set.attrs.get("method") or ("ingest" if self.image_set.kind == "real" else "unknown"))

    def class_dir_names(self) -> list[str]:
        """A safe folder name per class; a name that collides after cleaning gets its index appended."""
        names: list[str] = []
        for i, name in enumerate(self.image_set.class_names):
            folder = safe_name(name)
            names.append(folder if folder not in names else f"{folder}_{i}")
        return names

    def image_names(self) -> list[str]:
        """A stem per image, ``<class>_<k>`` with k counting within the class, in label order."""
        folders = self.class_dir_names()
        counters: dict[int, int] = {}
        names = []
        for label in self.image_set.labels.tolist():
            k = counters.get(label, 0)
            counters[label] = k + 1
            names.append(f"{folders[label]}_{k:05d}")
        return names

    def patient_pseudonyms(self) -> list[str]:
        """A placeholder patient per image, numbered within this export, never derived from an ID.

        Real images: ``ANON0001``... one per distinct ``meta/patient_key`` (so patient-level splits
        stay possible downstream); a synthetic set: ``SYNTHETIC`` (its images belong to no patient).
        """
        s = self.image_set
        keys = s.meta.get("patient_key")
        if self.is_synthetic or keys is None:
            tag = "SYNTHETIC" if self.is_synthetic else "ANONYMOUS"
            return [tag] * s.n
        numbers: dict[str, int] = {}
        return [f"ANON{numbers.setdefault(str(k), len(numbers) + 1):04d}" for k in keys.tolist()]

    def spacing(self, index: int) -> tuple[float, float, float]:
        """(column, row, slice) spacing in mm of image ``index``: meta/spacing, then preprocessing."""
        meta = self.image_set.meta.get("spacing")
        if meta is not None and len(meta) > index:
            values = [float(v) for v in np.asarray(meta[index]).ravel()[:3]]
            if len(values) == 3 and all(np.isfinite(v) and v > 0 for v in values):
                return values[0], values[1], values[2]
        pre = self.image_set.attrs.get("preprocessing") or {}
        value = pre.get("spacing") if isinstance(pre, dict) else None
        if isinstance(value, (int, float)) and value > 0:
            return float(value), float(value), 1.0
        if isinstance(value, (list, tuple)) and len(value) >= 2 and all(isinstance(v, (int, float)) and v > 0 for v in value):
            return float(value[0]), float(value[1]), float(value[2]) if len(value) > 2 else 1.0
        return 1.0, 1.0, 1.0


@dataclass
class FormatResult:
    """What one exporter wrote: its folder (relative to the export folder), file count, notes."""

    folder: str
    files: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "files": self.files, "notes": list(self.notes)}


def safe_name(name: str) -> str:
    """A class name usable as a file or folder name on every OS (``"a/b c"`` -> ``"a_b_c"``)."""
    cleaned = _UNSAFE.sub("_", str(name)).strip("._")
    return cleaned or "class"


def to_uint8(display: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 0..255 (rounded)."""
    return np.round(np.clip(display, 0.0, 1.0) * 255.0).astype(np.uint8)


def channels_last(images: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, H, W] for one channel, [N, H, W, C] otherwise."""
    if images.shape[1] == 1:
        return images[:, 0]
    return np.moveaxis(images, 1, -1)
