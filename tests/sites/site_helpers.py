"""Helpers of the multi-site tests (imported by name; conftest.py names are ambiguous)."""

from __future__ import annotations

from pathlib import Path

from medcondense.config import IngestConfig
from medcondense.ingest.pipeline import run as ingest_run

SIZE = 16
PER_CLASS = {"train_per_class": 3, "val_per_class": 1, "test_per_class": 2}


def ingest(manifest: Path, output: Path, site: str, **options) -> dict:
    """Ingest one site's tree (the Python API, as the CLI would)."""
    config = IngestConfig(inputs=[str(manifest.parent)], labels_csv=str(manifest), output=str(output),
                          site=site, overwrite=True, **options)
    return ingest_run(config)
