"""Shared fixtures: small but real medcondense HDF5 files written through the store.

Stage tests (distill, evaluate, score, export) start from these; ingest tests build real DICOM
and NIfTI files in tests/ingest/conftest.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medcondense import store

from blob_data import make_blob_set


@pytest.fixture
def blob_set() -> store.ImageSet:
    """An in-memory separable 4-class 16 px set (24/4/8 train/val/test per class)."""
    return make_blob_set()


@pytest.fixture
def real_h5(tmp_path: Path, blob_set: store.ImageSet) -> Path:
    """``blob_set`` written to ``tmp_path/data.h5``."""
    path = tmp_path / "data.h5"
    store.write(path, blob_set)
    return path


@pytest.fixture(autouse=True)
def _restore_logging():
    """CLI runs install a handler on the ``medcondense`` logger (and stop propagation); undo it."""
    logger = logging.getLogger("medcondense")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
