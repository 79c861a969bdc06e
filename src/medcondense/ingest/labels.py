"""Labels: a CSV manifest, a DICOM keyword, or the folder structure.

Precedence, per file: the CSV manifest (``path,label[,patient,split,site]``, paths relative to
the CSV), then ``--label-tag``, then the first folder level under the file's input root. Files
directly in a root with no other source form one class named after that root folder (warned).
Class indices follow the sorted class names.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from medcondense.errors import ConfigError

log = logging.getLogger(__name__)

CSV_COLUMNS = ("path", "label", "patient", "split", "site")
SPLIT_CODES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
SHOW = 5


@dataclass(frozen=True)
class ManifestRow:
    """One row of the labels CSV."""

    label: str
    patient: str | None = None
    split: int | None = None
    site: str | None = None


def read_manifest(csv_path: str | Path) -> dict[Path, ManifestRow]:
    """Read the labels CSV into {resolved file path: row}.

    Raises
    ------
    ConfigError
        Unreadable CSV, a row without path or label, an unknown split name, or rows naming
        files that do not exist (the first few are listed).
    """
    csv_path = Path(csv_path)
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read the labels CSV ({exc.strerror})", path=csv_path) from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if rows and rows[0][0].strip().lower() == "path":
        header = [c.strip().lower() for c in rows[0]]
        rows = rows[1:]
    else:
        header = list(CSV_COLUMNS)
    col = {name: header.index(name) for name in CSV_COLUMNS if name in header}
    if "path" not in col or "label" not in col:
        raise ConfigError("the labels CSV needs path and label columns", path=csv_path)
    manifest: dict[Path, ManifestRow] = {}
    absent: list[str] = []
    for number, row in enumerate(rows, 1):
        get = lambda name: (row[col[name]].strip() if name in col and col[name] < len(row) else "")  # noqa: E731
        if not get("path") or not get("label"):
            raise ConfigError(f"row {number}: path and label are required", path=csv_path)
        split_name = get("split").lower()
        if split_name and split_name not in SPLIT_CODES:
            raise ConfigError(f"row {number}: unknown split {get('split')!r} (train, val or test)", path=csv_path)
        path = (csv_path.parent / get("path")).resolve()
        if not path.exists():
            absent.append(get("path"))
            continue
        manifest[path] = ManifestRow(
            label=get("label"), patient=get("patient") or None,
            split=SPLIT_CODES[split_name] if split_name else None, site=get("site") or None,
        )
    if absent:
        more = f" and {len(absent) - SHOW} more" if len(absent) > SHOW else ""
        raise ConfigError(
            f"{len(absent)} row(s) name files that do not exist: {', '.join(absent[:SHOW])}{more}",
            path=csv_path,
        )
    return manifest


def folder_label(path: str | Path, root: str | Path) -> tuple[str, bool]:
    """Label from the first folder level under ``root``; (label, True) when the file sits directly
    in the root (the class is then the root folder's own name)."""
    path, root = Path(path), Path(root)
    is_file, own_name, parent_name = _root_names(str(root))
    if is_file:
        return parent_name, True
    rel = path.relative_to(root).parts if path.is_relative_to(root) else (path.name,)
    if len(rel) > 1:
        return rel[0], False
    return own_name, True


@lru_cache(maxsize=64)
def _root_names(root: str) -> tuple[bool, str, str]:
    """(is a file, own name, parent's name) of an input root, resolved once per run, not per file."""
    resolved = Path(root).resolve()
    return Path(root).is_file(), resolved.name or "images", resolved.parent.name or "images"


def class_index(labels: list[str]) -> dict[str, int]:
    """Class name -> index, following the sorted names."""
    return {name: i for i, name in enumerate(sorted(set(labels)))}
