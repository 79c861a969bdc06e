"""Real-file fixtures for the ingest tests: DICOM series written with pydicom, NIfTI with nibabel."""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_helpers import write_series

from medcondense.config import IngestConfig


@pytest.fixture(autouse=True)
def _salt(monkeypatch):
    """A fixed site secret; no salt file is written into the real home folder."""
    monkeypatch.setenv("MEDCONDENSE_SALT", "test-secret")


@pytest.fixture
def cohort(tmp_path) -> Path:
    """Two classes (folders) x 6 patients, one 6-slice CT series each."""
    root = tmp_path / "cohort"
    for c, cls in enumerate(("healthy", "lesion")):
        for p in range(6):
            write_series(root / cls / f"p{p}", patient=f"{cls}{p}", n=6, seed=10 * c + p)
    return root


@pytest.fixture
def config(tmp_path):
    """An IngestConfig factory writing into tmp_path."""

    def make(inputs, **kwargs) -> IngestConfig:
        kwargs.setdefault("output", str(tmp_path / "out.h5"))
        kwargs.setdefault("size", 16)
        return IngestConfig(inputs=[str(i) for i in inputs], **kwargs)

    return make

