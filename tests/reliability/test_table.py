"""The reliability table (#18): one row per hostile case, each built from real files at test time.

Every row runs the real CLI and asserts the exit code, the one line it prints (no traceback, no
"a bug"), that no temporary or lock file is left, and that the victim file (a file the run must
never touch, also the target of the planted links) is unchanged. docs/reliability.md lists the
guarantee each row proves.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from rel_helpers import leftovers, nifti_cohort, one_clean_line, write_nifti
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app

VICTIM_TEXT = "precious: must never change"


def _ingest_helpers():
    """tests/ingest/ingest_helpers.py (real DICOM written with pydicom), loaded by path."""
    path = Path(__file__).resolve().parents[1] / "ingest" / "ingest_helpers.py"
    spec = importlib.util.spec_from_file_location("rel_ingest_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@dataclass
class Row:
    """One case: build inputs under ``tmp`` and return the CLI arguments; the expected outcome."""

    build: Callable[[Path], list[str]]
    code: int
    needles: tuple[str, ...] = ()  # in the one error line (exit 1/2/3/130) ...
    reject: str | None = None  # ... or in a row of the rejects CSV (exit 4)
    check: Callable[[Path], None] | None = None


def _cohort(tmp: Path) -> Path:
    return nifti_cohort(tmp / "in")


def _ingest(tmp: Path, *extra: str, inputs: Path | None = None) -> list[str]:
    return ["ingest", str(inputs or tmp / "in"), "-o", str(tmp / "out" / "data.h5"), "--size", "12", *extra]


# ---------------------------------------------------------------- builders of the hostile cases


def _split(value: str):
    return lambda tmp: _ingest(tmp, "--split", value) if _cohort(tmp) else []


def _size(value: str):
    return lambda tmp: _ingest(tmp, "--size", value) if _cohort(tmp) else []


def _option(*option: str):
    return lambda tmp: _ingest(tmp, *option) if _cohort(tmp) else []


def _more_than_memory(tmp: Path) -> list[str]:
    """A NIfTI with more 2048 px slices than this machine's free memory holds (tiny on disk)."""
    from medcondense.ingest.pipeline import available_memory

    free = available_memory()
    if free is None:
        pytest.skip("no MemAvailable in /proc/meminfo: the memory estimate is not made here")
    slices = free // (2048 * 2048 * 4 * 3) + 8
    import nibabel as nib

    (tmp / "in" / "a").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, slices), np.uint8), np.eye(4)), str(tmp / "in" / "a" / "long.nii.gz"))
    return _ingest(tmp, "--size", "2048")


def _symlink_folder_loop(tmp: Path) -> list[str]:
    _cohort(tmp)
    (tmp / "in" / "a" / "again").symlink_to(tmp / "in" / "a", target_is_directory=True)
    return _ingest(tmp)


def _symlink_file_loop(tmp: Path) -> list[str]:
    _cohort(tmp)
    (tmp / "in" / "a" / "x.nii").symlink_to(tmp / "in" / "a" / "y.nii")
    (tmp / "in" / "a" / "y.nii").symlink_to(tmp / "in" / "a" / "x.nii")
    return _ingest(tmp)


def _dangling_link(tmp: Path) -> list[str]:
    _cohort(tmp)
    (tmp / "in" / "a" / "gone.nii.gz").symlink_to(tmp / "nowhere.nii.gz")
    return _ingest(tmp)


def _non_utf8_name(tmp: Path) -> list[str]:
    _cohort(tmp)
    write_nifti(Path(os.fsdecode(os.fsencode(str(tmp / "in" / "a")) + b"/caf\xe9.nii")), np.ones((12, 12, 2)))
    return _ingest(tmp)


def _fifo(tmp: Path) -> list[str]:
    _cohort(tmp)
    os.mkfifo(tmp / "in" / "a" / "pipe.nii")  # a reader would block on it forever
    return _ingest(tmp)


def _symlinked_class_folder(tmp: Path) -> list[str]:
    _cohort(tmp)
    nifti_cohort(tmp / "elsewhere", classes=("c",))
    (tmp / "in" / "c").symlink_to(tmp / "elsewhere" / "c", target_is_directory=True)
    return _ingest(tmp)


def _three_classes(tmp: Path) -> None:
    assert store.read(tmp / "out" / "data.h5").class_names == ["a", "b", "c"]


def _nan_voxels(tmp: Path) -> list[str]:
    _cohort(tmp)
    vol = np.random.default_rng(1).random((12, 12, 3)).astype(np.float32) * 100
    vol[3, 4, :] = np.nan  # two bad voxels per slice
    vol[7, 1, :] = np.inf
    write_nifti(tmp / "in" / "a" / "nan.nii.gz", vol)
    return _ingest(tmp)


def _all_finite(tmp: Path) -> None:
    s = store.read(tmp / "out" / "data.h5")
    assert np.isfinite(s.images).all() and s.n == 15  # 4 + 1 volumes x 3 slices: none dropped


def _all_nan(tmp: Path) -> list[str]:
    _cohort(tmp)
    write_nifti(tmp / "in" / "a" / "void.nii.gz", np.full((12, 12, 3), np.nan, np.float32))
    return _ingest(tmp)


def _dicom_cohort(tmp: Path, *, burned: dict) -> Path:
    helpers = _ingest_helpers()
    root = tmp / "in"
    for c, cls in enumerate(("a", "b")):
        for p in range(2):
            extra = burned if (c, p) == (0, 0) else {}
            helpers.write_series(root / cls / f"p{p}", patient=f"{cls}{p}", n=2, rows=12, cols=12,
                                 seed=10 * c + p, extra=extra)
    return root


def _burned_in(tmp: Path) -> list[str]:
    _dicom_cohort(tmp, burned={"BurnedInAnnotation": "YES"})
    return _ingest(tmp)


def _recognizable(tmp: Path) -> list[str]:
    _dicom_cohort(tmp, burned={"RecognizableVisualFeatures": "YES"})
    return _ingest(tmp)


def _burned_in_allowed(tmp: Path) -> list[str]:
    _dicom_cohort(tmp, burned={"BurnedInAnnotation": "YES"})
    return _ingest(tmp, "--allow-burned-in")


def _export_says_yes(tmp: Path) -> None:
    import pydicom

    data = tmp / "out" / "data.h5"
    assert store.read_attrs(data)["burned_in_images"] == 2
    result = CliRunner().invoke(app, ["export", str(data), "-o", str(tmp / "export"), "--format", "dicom,card", "--allow-real"])
    assert result.exit_code == 0, result.output
    files = list((tmp / "export").rglob("*.dcm"))
    assert files
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.BurnedInAnnotation == "YES" and ds.PatientIdentityRemoved == "NO"
    card = "\n".join(p.read_text(encoding="utf-8") for p in (tmp / "export").rglob("*.md"))
    assert "names or faces may be visible" in card and "carries no protected health information" not in card


def _label_tag(keyword: str, *extra: str):
    def build(tmp: Path) -> list[str]:
        _dicom_cohort(tmp, burned={})
        return _ingest(tmp, "--label-tag", keyword, *extra)

    return build


def _names_are_classes(tmp: Path) -> None:
    assert store.read(tmp / "out" / "data.h5").class_names == ["Doe^a0", "Doe^a1", "Doe^b0", "Doe^b1"]


def _patient_named_reject(tmp: Path) -> list[str]:
    _cohort(tmp)
    (tmp / "in" / "a" / "Doe_John_1957.dcm").write_bytes(b"not an image")
    return _ingest(tmp, "--hash-paths")


def _no_names_in_rejects(tmp: Path) -> None:
    text = (tmp / "out" / "data.h5.rejects.csv").read_text(encoding="utf-8")
    assert "Doe" not in text and "John" not in text and len(text.splitlines()) == 2


def _planted_links(tmp: Path) -> list[str]:
    _cohort(tmp)
    (tmp / "out").mkdir()
    for name in ("data.h5.tmp", ".data.h5.tmp", "data.h5.rejects.csv.tmp"):
        (tmp / "out" / name).symlink_to(tmp / "victim.txt")
    return _ingest(tmp)


def _existing_output(tmp: Path) -> list[str]:
    _cohort(tmp)
    (tmp / "out").mkdir()
    (tmp / "out" / "data.h5").write_text("someone else's file")
    return _ingest(tmp)


def _not_ours(tmp: Path) -> list[str]:
    (tmp / "fake.h5").write_text("not HDF5")
    return ["distill", str(tmp / "fake.h5"), "-o", str(tmp / "out" / "syn.h5")]


def _written_blob_set(tmp: Path) -> Path:
    from blob_data import make_blob_set

    path = tmp / "data.h5"
    store.write(path, make_blob_set())
    return path


def _tampered_pixels(tmp: Path) -> list[str]:
    import h5py

    path = _written_blob_set(tmp)
    with h5py.File(path, "a") as f:
        f["images"][0, 0, 0, 0] = f["images"][0, 0, 0, 0] + 0.5  # one pixel, still finite
    return ["distill", str(path), "-o", str(tmp / "out" / "syn.h5")]


def _damaged_chunk(tmp: Path) -> list[str]:
    import h5py

    path = _written_blob_set(tmp)
    with h5py.File(path, "r") as f:
        info = f["images"].id.get_chunk_info(3)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset + 4)
        raw.write(bytes(range(256))[: max(8, info.size - 8)])
    return ["distill", str(path), "-o", str(tmp / "out" / "syn.h5")]


def _real_and_syn(tmp: Path, **syn_attrs) -> tuple[Path, Path]:
    """A real blob set and a synthetic set of the same shape (its images: a few real ones)."""
    import dataclasses

    from blob_data import make_blob_set

    real = make_blob_set()
    real_path = tmp / "data.h5"
    digest = store.write(real_path, real)
    keep = np.concatenate([np.flatnonzero(real.labels == k)[:2] for k in range(len(real.class_names))])
    syn = dataclasses.replace(
        real.select(np.isin(np.arange(real.n), keep)), kind="synthetic", meta={},
        attrs={**real.attrs, "method": "dm", "ipc": 2, "source_hash": digest, **syn_attrs},
    )
    syn = dataclasses.replace(syn, split=np.zeros(syn.n, np.uint8))
    syn_path = tmp / "syn.h5"
    store.write(syn_path, syn)
    return real_path, syn_path


def _evaluate_other_intensity(tmp: Path) -> list[str]:
    real_path, syn_path = _real_and_syn(tmp, normalization={"method": "zscore", "params": {"mean": 3.0, "std": 9.0}})
    return ["evaluate", str(syn_path), "--real", str(real_path), "-o", str(tmp / "out" / "report.json")]


def _score_other_source(tmp: Path) -> list[str]:
    real_path, syn_path = _real_and_syn(tmp, source_hash="0" * 64)
    return ["score", str(real_path), str(syn_path), "-o", str(tmp / "out" / "score.json")]


def _empty_folder(tmp: Path) -> list[str]:
    (tmp / "in").mkdir()
    return _ingest(tmp)


ROWS: dict[str, Row] = {
    "split-sum-not-1": Row(_split("0.9,0.9,0.9"), 2, ("--split", "sum to 1")),
    "split-nan": Row(_split("nan,0.5,0.5"), 2, ("--split", "finite")),
    "split-negative": Row(_split("1.2,-0.1,-0.1"), 2, ("--split", ">= 0")),
    "size-too-large": Row(_size("100000"), 2, ("--size", "at most 2048")),
    "size-too-small": Row(_size("2"), 2, ("--size", "at least 4")),
    "size-beyond-memory": Row(_more_than_memory, 2, ("--size 2048", "GB of memory", "available")),
    "spacing-nan": Row(_option("--spacing", "nan"), 2, ("--spacing", "positive")),
    "workers-zero": Row(_option("--workers", "0"), 2, ("--workers",)),
    "label-tag-identifying": Row(_label_tag("PatientName"), 2, ("PatientName", "identifying", "--allow-identifying-label-tag")),
    "label-tag-typo": Row(_label_tag("BodyPartExamind"), 2, ("not a DICOM keyword",)),
    "label-tag-identifying-allowed": Row(_label_tag("PatientName", "--allow-identifying-label-tag"), 0, check=_names_are_classes),
    "burned-in-annotation": Row(_burned_in, 4, reject="BurnedInAnnotation is YES"),
    "recognizable-features": Row(_recognizable, 4, reject="RecognizableVisualFeatures is YES"),
    "burned-in-allowed-export-says-yes": Row(_burned_in_allowed, 0, check=_export_says_yes),
    "nan-inf-voxels": Row(_nan_voxels, 0, check=_all_finite),
    "all-nan-volume": Row(_all_nan, 4, reject="no finite voxel"),
    "symlink-folder-loop": Row(_symlink_folder_loop, 4, reject="already read through another path"),
    "symlink-file-loop": Row(_symlink_file_loop, 4, reject="symbolic link loop"),
    "dangling-symlink": Row(_dangling_link, 4, reject="dangling symbolic link"),
    "non-utf8-name": Row(_non_utf8_name, 4, reject="not valid UTF-8"),
    "fifo": Row(_fifo, 4, reject="not a regular file"),
    "symlinked-class-folder": Row(_symlinked_class_folder, 0, check=_three_classes),
    "hash-paths-rejects": Row(_patient_named_reject, 4, reject="neither DICOM", check=_no_names_in_rejects),
    "planted-temporary-links": Row(_planted_links, 0),
    "existing-output": Row(_existing_output, 2, ("exists", "--overwrite")),
    "not-a-medcondense-file": Row(_not_ours, 3, ("fake.h5",)),
    "empty-input-folder": Row(_empty_folder, 3, ("no readable DICOM or NIfTI",)),
    "evaluate-other-intensity-space": Row(_evaluate_other_intensity, 2, ("syn.h5", "intensity space", "'window' in data.h5", "--allow-mismatch")),
    "score-other-source": Row(_score_other_source, 2, ("syn.h5", "made from another set than data.h5", "--allow-mismatch")),
    "tampered-pixels": Row(_tampered_pixels, 3, ("data.h5", "content hash does not match")),
    "damaged-chunk": Row(_damaged_chunk, 3, ("data.h5", "damaged")),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_row(name: str, tmp_path: Path) -> None:
    row = ROWS[name]
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    args = row.build(tmp_path)
    result = CliRunner().invoke(app, args)
    stderr = result.stderr
    assert result.exit_code == row.code, (args, result.output, stderr)
    assert "Traceback" not in result.output + stderr and "a bug in medcondense" not in stderr
    if row.code in (1, 2, 3, 130):
        one_clean_line(stderr, *row.needles)
    if row.reject is not None:
        with open(tmp_path / "out" / "data.h5.rejects.csv", newline="", encoding="utf-8") as f:
            reasons = [r["reason"] for r in csv.DictReader(f)]
        assert any(row.reject in r for r in reasons), reasons
    assert not leftovers(tmp_path)
    assert victim.read_text() == VICTIM_TEXT
    if row.check is not None:
        row.check(tmp_path)


def test_row_unreadable_subfolder_is_a_reject_row(tmp_path: Path) -> None:
    """Root reads every folder, so the CLI runs without the capabilities that let it
    (setpriv drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH); as another user, chmod 000 does it."""
    import shutil
    import subprocess

    from rel_helpers import cli_command, cli_env

    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make a folder unreadable")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]
    nifti_cohort(tmp_path / "in")
    locked = tmp_path / "in" / "b" / "locked"
    write_nifti(locked / "hidden.nii.gz", np.ones((12, 12, 3)))
    locked.chmod(0o000)
    try:
        result = subprocess.run(
            prefix + cli_command("ingest", tmp_path / "in", "-o", tmp_path / "out" / "data.h5", "--size", "12"),
            capture_output=True, text=True, timeout=180, env=cli_env(),
        )
    finally:
        locked.chmod(0o755)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    with open(tmp_path / "out" / "data.h5.rejects.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["reason"] for r in rows] == ["cannot read the folder (permission denied)"]
    assert rows[0]["path"].endswith("locked")
    assert not leftovers(tmp_path)


def test_store_never_writes_non_finite_images(tmp_path: Path) -> None:
    from blob_data import make_blob_set

    from medcondense.errors import RuntimeFailure

    image_set = make_blob_set()
    image_set.images[3, 0, 2, 2] = np.nan
    image_set.images[5, 0, 1, 1] = np.inf
    with pytest.raises(RuntimeFailure, match="2 image value"):
        store.write(tmp_path / "bad.h5", image_set)
    assert list(tmp_path.iterdir()) == []
