"""Plain image folders (PNG/JPEG/TIFF) and MedMNIST-layout npz files as ingest inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ingest_helpers import write_series
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app
from medcondense.errors import ConfigError, NoUsableInputError
from medcondense.ingest import pipeline


def write_png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Two classes: grey 8-bit PNGs, 16-bit grey PNG and TIFF, RGB JPEGs, a 16-bit RGB TIFF."""
    import tifffile

    root = tmp_path / "photos"
    ramp = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    for i in range(3):
        write_png(root / "benign" / f"g{i}.png", ramp)
        write_png(root / "malignant" / f"c{i}.jpg", np.stack([ramp, ramp // 2, 255 - ramp], -1))
    write_png(root / "benign" / "g16.png", np.tile(np.arange(16, dtype=np.uint16) * 4000, (16, 1)))
    write_png(root / "benign" / "g16.tif", np.full((16, 16), 65535, dtype=np.uint16))
    tifffile.imwrite(root / "malignant" / "rgb16.tif", np.full((16, 16, 3), [65535, 0, 32768], dtype=np.uint16))
    return root


def test_folders_of_grey_rgb_and_16_bit_images(photo_folder: Path, config) -> None:
    result = pipeline.run(config([photo_folder], channels="keep"))
    s = store.read(result["output"])
    assert s.class_names == ["benign", "malignant"] and s.image_shape == (3, 16, 16)
    assert result["classes"] == {"benign": 5, "malignant": 4} and s.attrs["modality"] == "OT"
    by_source = dict(zip(s.meta["source_path"], range(s.n)))
    ramp = np.arange(16) * 16 / 255.0
    assert np.allclose(s.images[by_source["benign/g0.png"], 0, 5], ramp, atol=1e-4)  # 8 bit / 255
    assert np.allclose(s.images[by_source["benign/g16.png"], 1, 5], np.arange(16) * 4000 / 65535, atol=1e-4)  # / 65535
    assert np.allclose(s.images[by_source["benign/g16.tif"]], 1.0)
    rgb16 = s.images[by_source["malignant/rgb16.tif"]]  # 16-bit RGB kept at 16 bits (tifffile)
    assert np.allclose(rgb16[:, 8, 8], [1.0, 0.0, 32768 / 65535], atol=1e-5)
    jpeg = s.images[by_source["malignant/c0.jpg"]]
    assert jpeg[0, 5].mean() > jpeg[2, 5].mean() - 0.2 and abs(jpeg[0, 5, 15] - 240 / 255) < 0.05
    assert len(set(s.meta["patient_key"])) == s.n  # no tags: one patient per image


def test_grey_channels_are_luminance(photo_folder: Path, config) -> None:
    s = store.read(pipeline.run(config([photo_folder]))["output"])
    assert s.image_shape == (1, 16, 16)


def test_truncated_png_is_rejected_with_a_reason(tmp_path: Path, config) -> None:
    good = write_png(tmp_path / "in" / "a" / "ok.png", np.full((16, 16), 100, np.uint8))
    bad = tmp_path / "in" / "a" / "cut.png"
    data = write_png(bad, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    result = pipeline.run(config([tmp_path / "in"]))
    assert result["images"] == 1 and result["exit_code"] == 4
    rows = Path(result["rejects_report"]).read_text().splitlines()
    assert any("cut.png" in r and "truncated PNG" in r for r in rows), rows
    assert good.exists()


def test_a_root_with_dicom_and_images_is_exit_2_with_both_counts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDCONDENSE_SALT", "x")
    write_series(tmp_path / "export" / "series", n=3)
    write_png(tmp_path / "export" / "thumbs" / "t0.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "export" / "thumbs" / "t1.png", np.zeros((8, 8), np.uint8))
    out = tmp_path / "o.h5"
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "export"), "-o", str(out), "--size", "8"])
    assert result.exit_code == 2, result.output
    assert "3 DICOM" in result.output and "2 PNG/JPEG/TIFF" in result.output and "--input-format" in result.output
    assert not out.exists()
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "export"), "-o", str(out), "--size", "8",
                                      "--input-format", "dicom", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 3


def test_unknown_input_format_is_exit_2_even_where_nothing_is_readable(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "empty"), "-o", str(tmp_path / "o.h5"),
                                      "--input-format", "jpeg"])
    assert result.exit_code == 2, result.output  # the option is wrong, whatever the folder holds
    assert "--input-format 'jpeg'" in result.output and "images" in result.output


# ----------------------------------------------------------------------------- npz


def write_npz(path: Path, n: int = 6, size: int = 8, classes: int = 3, labels_shape=None, images=None) -> Path:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, count in (("train", n), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = images if images is not None else rng.integers(0, 255, (count, size, size), dtype=np.uint8)
        k = len(arrays[f"{split}_images"])
        arrays[f"{split}_labels"] = (rng.integers(0, 2, (k, *labels_shape)) if labels_shape
                                     else (np.arange(k) % classes).reshape(-1, 1).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def test_npz_with_classes_json_keeps_splits_order_and_names(tmp_path: Path, config) -> None:
    path = write_npz(tmp_path / "set" / "demo.npz")
    (tmp_path / "set" / "classes.json").write_text(json.dumps({"label": {"0": "zeta", "1": "alpha", "2": "mid"}}))
    result = pipeline.run(config([path], size=8))
    s = store.read(result["output"])
    assert s.class_names == ["zeta", "alpha", "mid"]  # the file's label order, not sorted
    assert result["splits"] == {"train": 6, "val": 2, "test": 3}
    with np.load(path) as f:
        assert np.array_equal(s.part(store.SPLIT_TEST).labels, f["test_labels"].ravel())
        assert np.allclose(s.part(store.SPLIT_TRAIN).images[:, 0], f["train_images"] / 255.0, atol=1e-6)


def test_npz_without_class_names_asks_for_them(tmp_path: Path, config) -> None:
    path = write_npz(tmp_path / "set" / "demo.npz")
    with pytest.raises(ConfigError, match="classes.json.*medmnist.*--class-names"):
        pipeline.run(config([path], size=8))
    result = pipeline.run(config([path], size=8, class_names=["a", "b", "c"]))
    assert store.read(result["output"]).class_names == ["a", "b", "c"]


def test_chestmnist_shaped_multi_label_npz_is_refused(tmp_path: Path, config) -> None:
    path = write_npz(tmp_path / "chestmnist.npz", labels_shape=(14,))
    with pytest.raises(NoUsableInputError, match="multi-label.*14"):
        pipeline.run(config([path], size=8, class_names=[str(i) for i in range(14)]))


def test_3d_npz_is_refused(tmp_path: Path, config) -> None:
    volumes = np.zeros((4, 28, 28, 28), np.uint8)
    path = write_npz(tmp_path / "organmnist3d.npz", images=volumes)
    with pytest.raises(NoUsableInputError, match="3D set"):
        pipeline.run(config([path], size=8, class_names=["a", "b", "c"]))


def test_cli_npz_error_is_exit_3_without_traceback(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDCONDENSE_SALT", "x")
    path = write_npz(tmp_path / "chestmnist.npz", labels_shape=(14,))
    result = CliRunner().invoke(app, ["ingest", str(path), "-o", str(tmp_path / "o.h5"), "--class-names", "a,b"])
    assert result.exit_code == 3 and "multi-label" in result.output and "Traceback" not in result.output


def test_16_bit_rgb_tiff_without_tifffile_is_rejected_naming_the_extra(photo_folder: Path, tmp_path: Path) -> None:
    """tifffile hidden in a fresh interpreter: Pillow would cut the file to 8 bits, so it is a reject."""
    code = (
        "import sys; sys.modules['tifffile'] = None\n"
        "from medcondense.ingest.images import image_task\n"
        f"print(image_task(({str(photo_folder / 'malignant' / 'rgb16.tif')!r}, 8, 'keep')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "16-bit RGB TIFF" in done.stdout and "medcondense[tiff]" in done.stdout


def test_npz_export_ingest_round_trip_on_a_real_set(cohort: Path, tmp_path: Path, config) -> None:
    """A real DICOM set ingested with --normalize window -> export npz -> ingest: images within 8-bit
    quantisation, labels, splits and class names equal."""
    from medcondense.config import ExportConfig
    from medcondense.export import pipeline as export_pipeline

    first = pipeline.run(config([cohort], output=str(tmp_path / "real.h5"), normalize="window"))
    out = tmp_path / "out"
    export_pipeline.run(ExportConfig(input=first["output"], output=str(out), formats=["npz"]))
    again = pipeline.run(config([out / "npz" / "real.npz"], output=str(tmp_path / "back.h5"), normalize="window"))
    a, b = store.read(first["output"]), store.read(again["output"])
    assert a.class_names == b.class_names and a.image_shape == b.image_shape
    for code in store.SPLIT_NAMES:
        pa, pb = a.part(code), b.part(code)
        assert pa.n == pb.n and (pa.labels == pb.labels).all()
        assert np.abs(pa.images - pb.images).max() <= 1 / 255
    assert len(set(a.split.tolist())) == 3  # the split really was exercised


def test_labels_csv_patients_group_images_and_are_keyed(tmp_path: Path, config) -> None:
    """A patient column in the labels CSV groups images (HMAC-keyed, never stored raw); its splits win."""
    rows = ["path,label,patient,split"]
    for i in range(6):
        write_png(tmp_path / "in" / f"img{i}.png", np.full((8, 8), 40 * i, np.uint8))
        rows.append(f"in/img{i}.png,{'a' if i % 2 else 'b'},Jane Doe {i // 2},{'test' if i >= 4 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = pipeline.run(config([tmp_path / "in"], labels_csv=str(tmp_path / "labels.csv")))
    s = store.read(result["output"])
    assert result["patients"] == 3 and result["splits"] == {"train": 4, "val": 0, "test": 2}
    keys = list(s.meta["patient_key"])
    assert len(set(keys)) == 3 and not any("Jane" in k for k in keys)
