"""examples/pacs_orthanc.py: Orthanc started locally, the example DICOM uploaded, ingested over DICOMweb."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pacs_orthanc.py"


@pytest.fixture(scope="module")
def pacs_orthanc() -> ModuleType:
    """examples/pacs_orthanc.py as a module (examples/ is not a package)."""
    name = "examples_pacs_orthanc"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_example_ingests_from_its_own_orthanc(pacs_orthanc, tmp_path, capsys, monkeypatch):
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:
        import dicomweb_client  # noqa: F401
        pacs_orthanc.find_orthanc()
    except (ImportError, SystemExit) as exc:
        (pytest.fail if in_ci else pytest.skip)(str(exc) or 'pip install "medcondense[pacs]"')
    monkeypatch.setenv("MEDCONDENSE_SALT", "example")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2] / "src"))
    code = pacs_orthanc.main(["--out", str(tmp_path), "--train-per-class", "1", "--test-per-class", "1",
                              "--size", "16"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 30 and summary["patients"] == 3 and summary["rejects"] == 0
    assert (tmp_path / "series_labels.csv").read_text().startswith("series_uid,label,patient,split")
    assert (tmp_path / "data.h5").is_file()
