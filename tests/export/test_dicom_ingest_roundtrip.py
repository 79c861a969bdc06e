"""``medcondense ingest`` of an exported DICOM folder reproduces the set (images, labels, splits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app
from medcondense.config import ExportConfig
from medcondense.export import pipeline
from medcondense.export.context import ExportContext
from medcondense.export.intensity import intensity_map


@pytest.fixture(autouse=True)
def site_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ingest keys patients with a site secret; keep it out of the home folder."""
    monkeypatch.setenv("MEDCONDENSE_SALT", "export-roundtrip-test")


def export_then_ingest(path: Path, tmp_path: Path, *ingest_options: str, allow_real: bool = False) -> store.ImageSet:
    out = tmp_path / "out"
    pipeline.run(ExportConfig(input=str(path), output=str(out), formats=["dicom"], allow_real=allow_real))
    back = tmp_path / "back.h5"
    result = CliRunner().invoke(app, [
        "ingest", str(out / "dicom"), "-o", str(back), "--size", "16",
        "--labels", str(out / "dicom" / "manifest.csv"), *ingest_options,
    ])
    assert result.exit_code == 0, result.output
    return store.read(back)


def in_export_order(original: store.ImageSet, back: store.ImageSet) -> store.ImageSet:
    """Reorder the ingested set like the original, through the exported file names."""
    position = {Path(p).stem: i for i, p in enumerate(back.meta["source_path"])}
    names = ExportContext(original, "x.h5", "0" * 64).image_names()
    return back.select(np.array([position[n] for n in names]))


@pytest.mark.parametrize("window", ["voi", "40/400"])
def test_ingest_with_the_window_reproduces_a_synthetic_set(syn_h5: Path, syn_set, tmp_path: Path, window: str) -> None:
    back = in_export_order(syn_set, export_then_ingest(syn_h5, tmp_path, "--window", window))
    assert back.class_names == syn_set.class_names
    np.testing.assert_array_equal(back.labels, syn_set.labels)
    np.testing.assert_array_equal(back.split, syn_set.split)
    assert back.attrs["modality"] == "CT"
    # one uint16 step of a 400 HU range is 400/65534 HU, i.e. 1.5e-5 of the window
    np.testing.assert_allclose(back.images, syn_set.images, atol=2e-5)


def test_ingest_without_window_gives_hounsfield_units(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    back = in_export_order(syn_set, export_then_ingest(syn_h5, tmp_path, "--window", "none"))
    hu = intensity_map(syn_set.attrs, 1).to_modality(syn_set.images)
    np.testing.assert_allclose(back.images, hu, atol=400 / 65534)


def test_real_set_round_trip_keeps_labels_and_splits(real_h5: Path, blob_set, tmp_path: Path) -> None:
    # the fixture's window is per-series percentile: exported in window space, read back with none
    back = in_export_order(blob_set, export_then_ingest(real_h5, tmp_path, "--window", "none", allow_real=True))
    np.testing.assert_array_equal(back.labels, blob_set.labels)
    np.testing.assert_array_equal(back.split, blob_set.split)
    np.testing.assert_allclose(back.images, blob_set.images, atol=1e-4)
