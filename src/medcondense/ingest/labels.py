"""Labels: a CSV manifest, a DICOM keyword, or the folder structure.

Precedence, per file: the CSV manifest, then ``--label-tag``, then the first folder level under
the file's input root. Files directly in a root with no other source form one class named after
that root folder (warned). Class indices follow the sorted class names.

The CSV is keyed by exactly one column: ``path`` (relative to the CSV) or a DICOM identity,
``study_uid``, ``series_uid``, ``accession`` or ``patient_id`` (:class:`KeyedSheet`; the way
hospitals keep labels, and the only way to label DICOMweb inputs). Identity keys are matched
in memory and never stored or logged: messages name sheet lines, not key values.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from medcondense.errors import ConfigError
from medcondense.ingest.deid import relative_source

log = logging.getLogger(__name__)

CSV_COLUMNS = ("path", "label", "patient", "split", "site")
# identity key column -> the Header field it is matched against
KEY_COLUMNS = {"study_uid": "study_uid", "series_uid": "series_uid", "accession": "accession",
               "patient_id": "patient_id"}
SPLIT_CODES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}
SHOW = 5


@dataclass(frozen=True)
class ManifestRow:
    """One row of the labels CSV."""

    label: str
    patient: str | None = None
    split: int | None = None
    site: str | None = None


def read_sheet(csv_path: str | Path) -> "dict[Path, ManifestRow] | KeyedSheet":
    """The labels CSV: a path manifest (:func:`read_manifest`) or a :class:`KeyedSheet`.

    Raises
    ------
    ConfigError
        Unreadable CSV, more than one key column, or any error of the sheet's kind.
    """
    csv_path = Path(csv_path)
    rows = _csv_rows(csv_path)
    first = [c.strip().lower() for c in rows[0]] if rows else []
    keys = [c for c in first if c in KEY_COLUMNS or c == "path"]
    if len(keys) > 1:
        raise ConfigError(f"the labels CSV has {len(keys)} key columns ({', '.join(keys)}); "
                          "use exactly one of path, " + ", ".join(KEY_COLUMNS), path=csv_path)
    if keys and keys[0] in KEY_COLUMNS:
        return KeyedSheet.from_rows(csv_path, first, rows[1:])
    return read_manifest(csv_path)


def _csv_rows(csv_path: Path) -> list[list[str]]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read the labels CSV ({exc.strerror})", path=csv_path) from None
    except UnicodeDecodeError:
        raise ConfigError("the labels CSV is not UTF-8 text", path=csv_path) from None
    return [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]


def read_manifest(csv_path: str | Path) -> dict[Path, ManifestRow]:
    """Read a path-keyed labels CSV into {resolved file path: row}.

    Raises
    ------
    ConfigError
        Unreadable CSV, a row without path or label, an unknown split name, or rows naming
        files that do not exist (the first few are listed).
    """
    csv_path = Path(csv_path)
    rows = _csv_rows(csv_path)
    if rows and "path" in [c.strip().lower() for c in rows[0]]:
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


def _row_of(get, number: int, csv_path: Path) -> ManifestRow:
    """The label, patient, split and site of one sheet row (``get(column)`` gives a cell)."""
    split_name = get("split").lower()
    if split_name and split_name not in SPLIT_CODES:
        raise ConfigError(f"line {number}: unknown split {get('split')!r} (train, val or test)", path=csv_path)
    return ManifestRow(label=get("label"), patient=get("patient") or None,
                       split=SPLIT_CODES[split_name] if split_name else None, site=get("site") or None)


def _lines(numbers: list[int]) -> str:
    more = f" and {len(numbers) - SHOW} more" if len(numbers) > SHOW else ""
    return ", ".join(map(str, numbers[:SHOW])) + more


@dataclass
class KeyedSheet:
    """A labels sheet keyed by a DICOM identity (``study_uid``, ``series_uid``, ``accession`` or
    ``patient_id``): every image whose identity equals a row's key gets that row's label.

    ``rows`` maps a key value to its (line number, row) pairs; several lines with one key and the
    same label, patient, split and site are one row, differing ones are a conflict.
    """

    path: Path
    key: str
    rows: dict[str, list[tuple[int, ManifestRow]]]

    @classmethod
    def from_rows(cls, csv_path: Path, header: list[str], rows: list[list[str]]) -> "KeyedSheet":
        key = next(c for c in header if c in KEY_COLUMNS)
        if "label" not in header:
            raise ConfigError(f"the labels CSV needs a label column beside {key}", path=csv_path)
        col = {name: header.index(name) for name in (key, *CSV_COLUMNS) if name in header}
        by_key: dict[str, list[tuple[int, ManifestRow]]] = {}
        for number, row in enumerate(rows, 2):
            get = lambda name: (row[col[name]].strip() if name in col and col[name] < len(row) else "")  # noqa: E731
            if not get(key) or not get("label"):
                raise ConfigError(f"line {number}: {key} and label are required", path=csv_path)
            by_key.setdefault(get(key), []).append((number, _row_of(get, number, csv_path)))
        if not by_key:
            raise ConfigError("the labels CSV has no rows", path=csv_path)
        return cls(csv_path, key, by_key)

    def keys(self) -> list[str]:
        """The key values, sorted (for choosing the DICOMweb studies to read)."""
        return sorted(self.rows)

    def match(self, header) -> tuple[ManifestRow | None, str | None]:
        """(row, None) for the image with this header, or (None, the reject reason)."""
        found = self.rows.get(str(getattr(header, KEY_COLUMNS[self.key]) or "").strip())
        if not found:
            return None, f"matches no row of the labels CSV (by {self.key})"
        distinct = {row for _, row in found}
        if len(distinct) > 1:
            labels = ", ".join(sorted({row.label for row in distinct}))
            return None, (f"conflicting rows for its {self.key} in the labels CSV "
                          f"(lines {_lines([n for n, _ in found])}; labels {labels})")
        return found[0][1], None

    def check_matched(self, headers: list) -> None:
        """Raise ConfigError naming the first lines (never the keys) of rows that match no image."""
        seen = {str(getattr(h, KEY_COLUMNS[self.key]) or "").strip() for h in headers}
        unmatched = sorted(n for value, found in self.rows.items() if value not in seen for n, _ in found)
        if unmatched:
            raise ConfigError(
                f"{len(unmatched)} row(s) match no input image by {self.key}: line(s) {_lines(unmatched)}",
                path=self.path, hint="remove those rows, or add the images they name to the inputs",
            )


def folder_label(path: str | Path, root: str | Path) -> tuple[str, bool]:
    """Label from the first folder level under ``root``; (label, True) when the file sits directly
    in the root (the class is then the root folder's own name)."""
    is_file, own_name, parent_name = _root_names(str(root))
    if is_file:
        return parent_name, True
    rel = relative_source(path, root).split("/")
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
