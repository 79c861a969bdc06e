"""examples/pacs_orthanc.py: Orthanc started locally, the example DICOM uploaded, ingested over DICOMweb."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType

import pytest

from conftest import load_example


@pytest.fixture(scope="module")
def pacs_orthanc() -> ModuleType:
    return load_example("pacs_orthanc")


def test_example_ingests_from_its_own_orthanc(pacs_orthanc, tmp_path, capsys, monkeypatch):
    pytest.importorskip("dicomweb_client")
    try:
        pacs_orthanc.find_orthanc()
    except SystemExit as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    monkeypatch.setenv("MEDCONDENSE_SALT", "example")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2] / "src"))
    code = pacs_orthanc.main(["--out", str(tmp_path), "--train-per-class", "1", "--test-per-class", "1",
                              "--size", "16"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 30 and summary["patients"] == 3 and summary["rejects"] == 0
    assert (tmp_path / "series_labels.csv").read_text().startswith("series_uid,label,patient,split")
    assert (tmp_path / "data.h5").is_file()
