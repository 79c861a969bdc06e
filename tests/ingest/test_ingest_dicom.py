import numpy as np
import pytest

from medcondense.ingest import dicom
from ingest_helpers import bundled, make_dataset, write_series


def headers_of(paths):
    return [dicom.read_header(str(p), str(p.parent)) for p in paths]


def test_shuffled_series_is_sorted_by_position(tmp_path):
    paths = write_series(tmp_path, n=6, seed=3)
    units, rejects = dicom.group_units(headers_of(paths))
    assert len(units) == 1 and not rejects
    unit = units[0]
    assert unit.is_volume and np.isclose(unit.slice_spacing, 2.5)
    firsts = [dicom.read_frames(h.path)[0, 0, -1, 0] for h in unit.headers]
    assert firsts == [100.0 * k for k in range(6)]  # 1024 + 100k - 1024


def test_oblique_orientation_sorts_along_the_normal(tmp_path):
    c, s = np.cos(0.4), np.sin(0.4)
    paths = write_series(tmp_path, n=5, orientation=(c, s, 0.0, 0.0, c, s), seed=5)
    unit = dicom.group_units(headers_of(paths))[0][0]
    values = [dicom.read_frames(h.path)[0, 0, -1, 0] for h in unit.headers]
    assert values == sorted(values)
    assert not unit.warnings


def test_duplicate_and_gap(tmp_path):
    paths = write_series(tmp_path, n=6, skip=(3,), duplicate=True)
    units, _ = dicom.group_units(headers_of(paths))
    unit = units[0]
    assert len(unit.headers) == 6
    assert any("duplicate" in w for w in unit.warnings)
    assert any("gap" in w for w in unit.warnings)


def test_mixed_sizes_are_rejected(tmp_path):
    paths = write_series(tmp_path, n=4)
    odd = make_dataset(np.zeros((10, 12)), series_uid=str(dicom.read_header(str(paths[0]), "").series_uid),
                       position=(0, 0, 50))
    odd.save_as(tmp_path / "odd", enforce_file_format=True)
    units, rejects = dicom.group_units(headers_of(paths + [tmp_path / "odd"]))
    assert len(units[0].headers) == 4
    assert rejects == [(str(tmp_path / "odd"), "size 10x12 differs from its series (24x24)")]


def test_modality_lut_in_float(tmp_path):
    ds = make_dataset(np.array([[0, 10], [20, 30]]), slope=0.5, intercept=-1024.5)
    ds.save_as(tmp_path / "f", enforce_file_format=True)
    out = dicom.read_frames(str(tmp_path / "f"))
    np.testing.assert_allclose(out[0, ..., 0], [[-1024.5, -1019.5], [-1014.5, -1009.5]])
    assert out.dtype == np.float32


def test_multiframe(tmp_path):
    frames = np.stack([np.full((8, 8), k, np.int16) for k in range(5)])
    ds = make_dataset(frames, intercept=0.0)
    ds.save_as(tmp_path / "mf", enforce_file_format=True)
    header = dicom.read_header(str(tmp_path / "mf"), "")
    assert header.frames == 5
    units, _ = dicom.group_units([header])
    assert units[0].is_volume
    assert dicom.read_frames(str(tmp_path / "mf"), [1, 3])[:, 0, 0, 0].tolist() == [1.0, 3.0]


def test_bundled_ct_header():
    h = dicom.read_header(str(bundled("CT_small.dcm")), "")
    assert h.modality == "CT" and (h.rows, h.cols) == (128, 128)


def test_jpeg_ls_without_codec_names_the_syntax():
    path = bundled("MR_small_jpeg_ls_lossless.dcm")
    try:
        import libjpeg  # noqa: F401
        pytest.skip("a JPEG-LS codec is installed here")
    except ImportError:
        pass
    with pytest.raises(dicom.DecodeError) as info:
        dicom.read_frames(str(path))
    message = str(info.value)
    assert "JPEG-LS Lossless" in message and "1.2.840.10008.1.2.4.80" in message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in message and "GPL-3.0" in message


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_rle_and_jpeg2000_decode(name):
    pytest.importorskip("pylibjpeg")
    reference = dicom.read_frames(str(bundled("MR_small.dcm")))
    out = dicom.read_frames(str(bundled(name)))
    np.testing.assert_allclose(out, reference)


def test_truncated_and_pixel_less(tmp_path):
    path = write_series(tmp_path, n=1)[0]
    data = path.read_bytes()
    (tmp_path / "trunc").write_bytes(data[: len(data) - 300])
    h = dicom.read_header(str(tmp_path / "trunc"), "")
    if isinstance(h, str):
        assert "truncated" in h or "unreadable" in h
    else:
        with pytest.raises(dicom.DecodeError):
            dicom.read_frames(str(tmp_path / "trunc"))
    ds = make_dataset(np.zeros((4, 4)))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix", enforce_file_format=True)
    assert dicom.read_header(str(tmp_path / "nopix"), "") == "no pixel data"
