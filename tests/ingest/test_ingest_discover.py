import shutil
from pathlib import Path

from medcondense.ingest.discover import discover, dicomdir_files, is_dicom
from ingest_helpers import bundled, make_dataset, write_series
import numpy as np


def test_dicom_by_content_not_extension(tmp_path):
    write_series(tmp_path / "a", n=2)
    (tmp_path / "a" / "notes.dcm").write_text("not dicom at all, just text")
    (tmp_path / "a" / ".hidden").write_bytes(b"x" * 200)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x").write_bytes(b"x")
    found = discover([str(tmp_path)])
    assert len(found.candidates) == 2
    assert all(c.kind == "dicom" for c in found.candidates)
    assert [Path(p).name for p, _ in found.rejects] == ["notes.dcm"]


def test_preambleless_dicom_is_found(tmp_path):
    ds = make_dataset(np.zeros((4, 4)))
    path = tmp_path / "raw"
    del ds.file_meta
    ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    assert is_dicom(path)


def test_dicomdir_uses_referenced_files(tmp_path):
    src = bundled("DICOMDIR").parent
    tree = tmp_path / "media"
    shutil.copytree(src, tree)
    (tree / "unreferenced.dcm").write_bytes((tree / "DICOMDIR").read_bytes())
    refs, missing = dicomdir_files(tree / "DICOMDIR")
    assert refs and not missing
    found = discover([str(tree)])
    assert {Path(c.path).resolve() for c in found.candidates} == {p.resolve() for p in refs}


def test_missing_input_and_nifti(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(b"")
    (tmp_path / "x_mask.nii.gz").write_bytes(b"")
    found = discover([str(tmp_path), str(tmp_path / "nope")], mask_suffix="_mask")
    assert [c.kind for c in found.candidates] == ["nifti"]
    assert found.rejects == [(str(tmp_path / "nope"), "no such file or folder")]


def test_real_path_per_folder_equals_resolve(tmp_path) -> None:
    """discover() dedupes files by real path, resolving each folder once (#16 speed): for plain
    files, links to files, files under a linked folder, dangling links and '..' it must agree
    with Path.resolve."""
    import os

    from medcondense.ingest.discover import _real_path

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    os.symlink(tmp_path / "a", tmp_path / "link")
    os.symlink(tmp_path / "a" / "b" / "f", tmp_path / "a" / "flink")
    os.symlink("nowhere", tmp_path / "dangling")
    folders: dict[str, str] = {}
    for path in (tmp_path / "a" / "b" / "f", tmp_path / "link" / "b" / "f", tmp_path / "a" / "flink",
                 tmp_path / "dangling", tmp_path / "a" / ".." / "a" / "b" / "f", Path("relative.dcm")):
        assert _real_path(str(path), folders) == str(path.resolve()), path
