"""Exports other tools read: ImageFolder / imagefolder layout, 16-bit PNG, MONAI datalist.
(The npz export -> ingest round trip is in tests/ingest/test_ingest_images.py, beside the DICOM fixtures.)"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from medcondense import store
from medcondense.config import ExportConfig
from medcondense.errors import ConfigError
from medcondense.export import pipeline as export_pipeline

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def export(path: Path, out: Path, formats: list[str], **kwargs) -> Path:
    export_pipeline.run(ExportConfig(input=str(path), output=str(out), formats=formats, **kwargs))
    return out


def test_png_folder_has_the_imagefolder_layout(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    """torchvision ImageFolder: classes = sorted sub-folders, images inside; HF imagefolder: every
    image at one depth (else labels are dropped), metadata.csv with file_name and no 'label' column."""
    out = export(syn_h5, tmp_path / "out", ["png"])
    root = out / "png"
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())  # torchvision find_classes
    assert classes == sorted(syn_set.class_names)
    images = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    assert len(images) == syn_set.n and {len(p.relative_to(root).parts) for p in images} == {2}
    assert (out / "grid.png").is_file() and not (root / "grid.png").exists()
    with open(root / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file_name", "class_index", "class_name", "split"]
    for row in rows:
        assert (root / row["file_name"]).is_file()
        assert Path(row["file_name"]).parts[0] == row["class_name"] == syn_set.class_names[int(row["class_index"])]


def test_png_bits_16_keeps_what_8_bits_would_quantise(syn_h5: Path, syn_set, tmp_path: Path) -> None:
    from PIL import Image

    out = export(syn_h5, tmp_path / "out", ["png"], png_bits=16)
    first = syn_set.class_names[int(syn_set.labels[0])]
    pixels = np.asarray(Image.open(out / "png" / first / f"{first}_00000.png"))
    assert pixels.dtype == np.uint16
    expected = np.clip(syn_set.images[0, 0], 0, 1)
    assert np.abs(pixels / 65535.0 - expected).max() <= 0.5 / 65535 + 1e-6
    assert np.abs(np.round(expected * 255) / 255 - expected).max() > 1e-3  # what 8 bits would have lost


def test_png_bits_16_of_rgb_is_a_config_error(tmp_path: Path, blob_set) -> None:
    rgb = store.ImageSet(np.repeat(blob_set.images, 3, axis=1), blob_set.labels, blob_set.split,
                         blob_set.class_names, kind="real")
    store.write(tmp_path / "rgb.h5", rgb)
    with pytest.raises(ConfigError, match="grey"):
        export(tmp_path / "rgb.h5", tmp_path / "out", ["png"], png_bits=16)
    assert not (tmp_path / "out").exists()


def test_monai_datalist_parses_and_its_paths_exist(subset_h5: Path, tmp_path: Path) -> None:
    out = export(subset_h5, tmp_path / "out", ["nifti"])
    doc = json.loads((out / "dataset.json").read_text())
    try:
        from monai.data import load_decathlon_datalist
    except ImportError:  # the documented decathlon layout, checked by hand
        load_decathlon_datalist = None
    total = 0
    assert "training" in doc
    for key in ("training", "validation", "test"):
        if key not in doc:  # a split without images has no list (MONAI's loader fails on an empty one)
            continue
        if load_decathlon_datalist is not None:
            items = load_decathlon_datalist(str(out / "dataset.json"), is_segmentation=False, data_list_key=key)
        else:
            items = [dict(i, image=str(out / i["image"])) for i in doc[key]]
        for item in items:
            assert Path(item["image"]).is_file() and isinstance(item["label"], int)
        total += len(items)
    s = store.read(subset_h5)
    assert total == s.n == doc["numTraining"] + doc["numValidation"] + doc["numTest"]
    assert doc["labels"] == {str(i): n for i, n in enumerate(s.class_names)}
