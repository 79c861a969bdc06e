"""The one-pass reader: the light DICOM parser matches pydicom, file by file, and ingest reads each
file once with the same result as decoding through pydicom."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fresh_interpreter import modules_loaded_after
from ingest_helpers import make_dataset, write_series

from medcondense import store
from medcondense.ingest import dicom, dicomfast, onepass, pipeline
from medcondense.ingest.resample import block_mean, resample_slice


def bundled_files() -> list[Path]:
    import pydicom

    folder = Path(pydicom.data.get_testdata_file("CT_small.dcm", download=False)).parent
    return sorted(p for p in folder.rglob("*") if p.is_file())


# one bundled file carries 128 bytes of excess pixel padding: pydicom warns and drops them, and the
# light parser must drop them too (the pixel comparison below checks it)
@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding:UserWarning")
def test_light_parser_matches_pydicom_on_every_bundled_file_it_accepts() -> None:
    import pydicom

    accepted = 0
    for path in bundled_files():
        data = path.read_bytes()
        try:
            light = dicomfast.parse(data)
            header = dicom.header_from(light, str(path), "/r")
            pixels = light.pixels()
        except dicomfast.NotLight:
            continue
        accepted += 1
        assert header == dicom.read_header(str(path), "/r"), path.name
        ds = pydicom.dcmread(path)
        assert np.array_equal(pixels, ds.pixel_array), path.name
        expected = dicom.frames_from(ds)[0][..., 0]
        slope, intercept = light.rescale
        assert np.allclose(pixels * slope + intercept, expected), path.name
    assert accepted >= 5  # CT_small, MR_small (explicit and implicit VR), ... are plain files


@pytest.mark.parametrize("name, why", [("JPEG2000.dcm", "transfer syntax"), ("rtdose.dcm", "several frames"),
                                       ("examples_palette.dcm", "not monochrome"), ("US1_UNCR.dcm", "several")])
def test_light_parser_leaves_what_it_cannot_reproduce_to_pydicom(name: str, why: str) -> None:
    import pydicom

    path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not bundled")
    with pytest.raises(dicomfast.NotLight, match=why):
        dicomfast.parse(Path(path).read_bytes())


def test_non_ascii_patient_id_goes_through_pydicom(tmp_path: Path) -> None:
    ds = make_dataset(np.zeros((8, 8)), extra={"SpecificCharacterSet": "ISO_IR 192"})
    ds.PatientID = "Müller"
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    with pytest.raises(dicomfast.NotLight, match="ASCII"):
        dicomfast.parse((tmp_path / "a.dcm").read_bytes())
    read = onepass.read_file_task((str(tmp_path / "a.dcm"), str(tmp_path), None, True, 8, None, "grey", False))
    assert read.header.patient_id == "Müller" and read.images is not None


def test_unused_high_bits_are_ignored_as_pydicom_does(tmp_path: Path) -> None:
    import pydicom

    raw = np.array([[0x0FFF, 0x1001], [0x8000, 0x0123]], dtype=np.uint16)  # junk above bit 11
    ds = make_dataset(raw.view(np.int16), extra={"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 1})
    ds.save_as(tmp_path / "b.dcm", enforce_file_format=True)
    light = dicomfast.parse((tmp_path / "b.dcm").read_bytes())
    assert np.array_equal(light.pixels(), pydicom.dcmread(tmp_path / "b.dcm").pixel_array)


def test_integer_block_mean_with_the_lut_after_it_equals_the_float_path() -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(-1000, 3000, size=(96, 64)).astype(np.int16)
    fast, s1 = resample_slice(raw, (0.7, 0.9), 16, rescale=(2.0, -1024.0))
    slow, s2 = resample_slice(raw.astype(np.float32) * 2.0 - 1024.0, (0.7, 0.9), 16)
    assert s1 == s2 and np.allclose(fast, slow, atol=1e-3)
    square = rng.integers(0, 4000, size=(64, 64)).astype(np.int16)
    identity, _ = resample_slice(square, (0.5, 0.5), 16, rescale=(1.0, -1024.0))  # no SimpleITK call
    expected = square.reshape(16, 4, 16, 4).mean(axis=(1, 3)) - 1024.0
    assert np.allclose(identity, expected, atol=1e-4)


@pytest.mark.parametrize("dtype, factor", [
    (np.int16, 8), (np.int16, 22), (np.int16, 23), (np.uint16, 16), (np.uint16, 17),
    (np.uint8, 4), (np.int32, 2), (np.bool_, 3),
])
def test_block_sums_are_exact_at_the_extremes_of_the_pixel_type(dtype, factor) -> None:
    """The float32 matrix-vector path (taken while every sum stays below 2**24) and the integer
    path both give the exact block sums, to the bit, at the smallest and largest pixel values."""
    rng = np.random.default_rng(factor)
    if dtype is np.bool_:
        raw = rng.integers(0, 2, size=(2 * factor, 3 * factor)).astype(bool)
    else:
        info = np.iinfo(dtype)
        raw = rng.choice(np.array([info.min, info.max, info.min + 1, info.max - 1, 0], dtype=dtype),
                         size=(2 * factor, 3 * factor))
        raw[:factor, :factor] = info.max  # the largest and the smallest possible block sums
        raw[factor:, :factor] = info.min
    exact = raw.astype(np.int64).reshape(2, factor, 3, factor).sum(axis=(1, 3))
    expected = exact.astype(np.float32) * np.float32(1.0 / (factor * factor))
    assert np.array_equal(block_mean(raw, factor), expected)


def test_one_pass_ingest_equals_the_pydicom_path(tmp_path: Path, config, monkeypatch) -> None:
    """Same series, same options: the light one-pass reader and pydicom give the same file content."""
    for p in range(2):
        write_series(tmp_path / "in" / f"p{p}", patient=f"P{p}", n=5, rows=32, cols=24, seed=p)
    fast = pipeline.run(config([tmp_path / "in"], output=str(tmp_path / "fast.h5")))

    def never_light(data: bytes):
        raise dicomfast.NotLight("test: pydicom only")

    monkeypatch.setattr(dicomfast, "parse", never_light)
    slow = pipeline.run(config([tmp_path / "in"], output=str(tmp_path / "slow.h5")))
    a, b = store.read(fast["output"]), store.read(slow["output"])
    assert np.allclose(a.images, b.images, atol=1e-5)
    assert (a.labels == b.labels).all() and (a.split == b.split).all()
    assert list(a.meta["patient_key"]) == list(b.meta["patient_key"])
    assert a.attrs["run_key"] == b.attrs["run_key"]


def test_rerun_is_a_no_op_and_a_changed_file_is_seen(tmp_path: Path, config) -> None:
    from medcondense.errors import AlreadyDone, ConfigError

    files = write_series(tmp_path / "in", n=4)
    cfg = config([tmp_path / "in"])
    pipeline.run(cfg)
    with pytest.raises(AlreadyDone):
        pipeline.run(cfg)
    data = bytearray(files[0].read_bytes())
    data[-1] ^= 0xFF  # one pixel byte: same size, new content
    files[0].write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="different run"):
        pipeline.run(cfg)


@pytest.mark.parametrize(("raw", "vr", "value"), [
    (b"", "DS", None), (b" ", "DS", None), (b"1.5 ", "DS", 1.5), (b" -2e3", "DS", -2000.0), (b"12 ", "IS", 12),
    (b"1.0", "IS", 1), (b"\x00", "IS", None), (b"1\\2", "DS", [1.0, 2.0]), (b"ORIGINAL\\PRIMARY", "CS", ["ORIGINAL", "PRIMARY"]),
    (b"CT", "CS", "CT"), (b"1.2.3\x00", "UI", "1.2.3"), (b"\x00\x02", "US", 512), (b"\x01\x00\x02\x00", "US", [1, 2]),
    (b"", "US", None), (b"  ", "LO", ""),
])
def test_light_values_decode_as_pydicom_gives_them(raw: bytes, vr: str, value) -> None:
    """The one-value fast paths of the light reader's _decode (#16 speed) give pydicom's values."""
    assert dicomfast._decode(raw, vr) == value


@pytest.mark.parametrize(("raw", "vr"), [(b"abc", "DS"), (b"1.5x", "IS"), (b"caf\xc3\xa9", "LO")])
def test_light_values_it_cannot_decode_go_to_pydicom(raw: bytes, vr: str) -> None:
    with pytest.raises(dicomfast.NotLight):
        dicomfast._decode(raw, vr)


def test_a_plain_ct_folder_loads_only_what_it_reads(tmp_path: Path) -> None:
    """The light path's start-up (issue #16): ingesting uncompressed CT slices to a size they
    shrink to by an integer factor imports neither pydicom nor SimpleITK, nor the readers of
    other inputs (NIfTI, npz, protocols, DICOMweb), nor rich with --json."""
    write_series(tmp_path / "in" / "c0", n=3, rows=32, cols=32)
    code = (
        "import sys\n"
        "from medcondense.cli import main\n"
        f"sys.argv = ['medcondense', 'ingest', {str(tmp_path / 'in')!r}, '-o', {str(tmp_path / 'd.h5')!r},"
        " '--size', '16', '--json', '--quiet']\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert done.code in (0, None), done.code\n"
    )
    others = ("medcondense.ingest.nifti", "medcondense.ingest.npz", "medcondense.ingest.protocol",
              "medcondense.ingest.dicomweb")
    assert modules_loaded_after(code, ("pydicom", "SimpleITK", "nibabel", "rich", *others)) == []
    assert (tmp_path / "d.h5").is_file()


def test_a_light_dataset_refuses_keywords_it_does_not_read(tmp_path: Path) -> None:
    """A keyword outside the light reader's table is never answered (as absent or otherwise):
    the file goes to pydicom. Known keywords answer, present or absent."""
    ds = make_dataset(np.zeros((4, 4), dtype=np.int16))
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    light = dicomfast.parse((tmp_path / "a.dcm").read_bytes())
    assert light.get("Rows") == 4 and light.get("NumberOfFrames", 1) == 1
    assert "FloatPixelData" not in light
    for ask in (lambda: light.get("PatientName"), lambda: "PatientName" in light, lambda: light.PatientName):
        with pytest.raises(dicomfast.NotLight, match="PatientName"):
            ask()
