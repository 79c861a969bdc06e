"""De-identification: keyed hashes, the salt file, and no PHI anywhere in the outputs."""

import json
import logging
import os
import stat
import zlib

import h5py
import numpy as np
from ingest_helpers import make_dataset
from typer.testing import CliRunner

from medcondense.cli import app
from medcondense.ingest import deid

PHI = {
    "PatientName": "Zzyzx^Quintessa",
    "PatientID": "MRN-99-8877",
    "PatientBirthDate": "19230417",
    "StudyDate": "20190302",
    "SeriesDate": "20190303",
    "AccessionNumber": "ACC-5566-XY",
    "InstitutionName": "Saint Hypothetical Infirmary",
    "ReferringPhysicianName": "Dr^Obscuro^Plinth",
    "StudyID": "STUDY-4242",
    "StudyDescription": "secret-head-protocol",
}
PRIVATE = "PRIVATE-VENDOR-TOKEN-31337"
UIDS = ("1.2.826.0.1.3680043.10.999.777.1", "1.2.826.0.1.3680043.10.999.777.2")


def test_keyed_hash_and_salt_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDCONDENSE_SALT")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    secret = deid.site_secret()
    path = tmp_path / "cfg" / "medcondense" / "salt"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(secret) == 64
    assert deid.site_secret() == secret
    a = deid.keyed_hash("P1", "patient", secret)
    assert a == deid.keyed_hash("P1", "patient", secret) != deid.keyed_hash("P1", "patient", b"other")
    assert a != deid.keyed_hash("P1", "series", secret) and "P1" not in a
    assert deid.safe_modality("CT") == "CT" and deid.safe_modality("Dr Who") == "OT"


def all_text(path) -> str:
    """Every dataset value and attribute of an HDF5 file, as text, plus the raw and inflated bytes."""
    parts = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            parts.append(name)
            parts.extend(f"{k}={v!r}" for k, v in obj.attrs.items())
            if isinstance(obj, h5py.Dataset):
                values = obj[()]
                parts.append(repr(values.tolist() if hasattr(values, "tolist") else values))
        parts.extend(f"{k}={v!r}" for k, v in f.attrs.items())
        f.visititems(visit)
    raw = open(path, "rb").read()
    parts.append(raw.decode("latin-1"))
    for start in range(len(raw) - 2):  # inflate every zlib stream (gzip-compressed chunks)
        if raw[start] == 0x78 and raw[start + 1] in (0x01, 0x5E, 0x9C, 0xDA):
            try:
                parts.append(zlib.decompressobj().decompress(raw[start:]).decode("latin-1"))
            except zlib.error:
                pass
    return "\n".join(parts)


def test_no_phi_in_file_logs_or_json(tmp_path, caplog):
    folder = tmp_path / "in" / "cls"
    folder.mkdir(parents=True)
    for k in range(3):
        ds = make_dataset(np.full((8, 8), 1000 + k), patient=PHI["PatientID"], study_uid=UIDS[0],
                          series_uid=UIDS[1], position=(0, 0, 2.0 * k), extra=PHI)
        block = ds.private_block(0x0011, "ACME 1.1", create=True)
        block.add_new(0x01, "LO", PRIVATE)
        ds.save_as(folder / f"f{k}", enforce_file_format=True)
    (folder / "junk").write_text("x")  # a reject, so the report and warnings run too
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out.h5"
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(tmp_path / "in"), "-o", str(out), "--json", "--size", "8", "-v"])
    assert result.exit_code == 4, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 3
    assert "1 input(s) rejected" in result.stderr  # the CLI's log lines are captured here
    haystacks = {"hdf5": all_text(out), "logs": caplog.text, "cli": result.output,
                 "rejects": (tmp_path / "out.h5.rejects.csv").read_text()}
    assert "cls/f0" in haystacks["hdf5"]  # the search does see dataset strings
    needles = [*PHI.values(), PRIVATE, *UIDS, "Zzyzx", "Quintessa", "Obscuro", "MRN-99"]
    for where, text in haystacks.items():
        for value in needles:
            assert value not in text, f"{value!r} found in {where}"
    with h5py.File(out, "r") as f:
        prov = json.loads(f.attrs["provenance"])
    assert str(tmp_path) not in json.dumps(prov)


def test_hash_paths_replaces_source_paths(tmp_path):
    from ingest_helpers import write_series

    from medcondense import store
    from medcondense.config import IngestConfig
    from medcondense.ingest import pipeline

    write_series(tmp_path / "in" / "Doe_John", n=2)
    cfg = IngestConfig(inputs=[str(tmp_path / "in")], output=str(tmp_path / "o.h5"), size=8, hash_paths=True)
    data = store.read(pipeline.run(cfg)["output"])
    assert all("Doe_John" not in p and len(p) == deid.KEY_CHARS for p in data.meta["source_path"])


def test_relative_source_text_cut_equals_pathlib(tmp_path) -> None:
    """relative_source cuts a discovered path below its root as text (start-up of #16); on awkward
    spellings (duplicate slashes, ".", "..", a trailing slash, a file root, a path elsewhere) it
    must give what pathlib's relative_to gives."""
    from pathlib import Path

    from medcondense.ingest import deid, labels

    def by_pathlib(path, root):
        path, root = Path(path), Path(root)
        if root.is_file() or path == root:
            return path.name
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return path.name

    d = str(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "f.dcm").write_bytes(b"")
    cases = [(f"{d}/a/b/x.dcm", d), (f"{d}/a/b/x.dcm", f"{d}/"), (f"{d}//a/./b/x.dcm", d), (f"{d}/a/b/", d), (d, d),
             (f"{d}/f.dcm", f"{d}/f.dcm"), ("/elsewhere/x.dcm", d), (f"{d}/a/../a/x", d), ("rel/a/x", "rel"),
             ("./rel/a/x", "rel"), ("rel/a/x", "./rel"), ("/x", "/"), (f"{d}x/y", d)]
    for path, root in cases:
        assert deid.relative_source(path, root) == by_pathlib(path, root), (path, root)
    assert labels.folder_label(f"{d}/a/b/x.dcm", d) == ("a", False)
    assert labels.folder_label(f"{d}/x.dcm", d) == (tmp_path.name, True)
