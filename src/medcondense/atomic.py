"""Atomic file writes: write ``<name>.tmp`` beside the target, rename over it when complete.

Every output of medcondense (HDF5 sets, checkpoints, reports, caches, plots) goes through here,
so an interrupted or failed run never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TMP_SUFFIX = ".tmp"


def tmp_path_for(path: str | Path) -> Path:
    """The temporary name used while ``path`` is being written."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any error it is removed.

    The parent folder is created when missing. An existing ``path`` stays untouched until the
    new content is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (non-JSON values as ``str``) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent, default=str) + "\n", encoding="utf-8")
