"""Evaluate fixtures: a 'synthetic' set of 5 real train images per class."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcondense import store

from evaluate_helpers import make_synthetic


@pytest.fixture
def syn_h5(tmp_path: Path, blob_set) -> Path:
    path = tmp_path / "syn_dm_ipc5.h5"
    store.write(path, make_synthetic(blob_set, 5))
    return path
