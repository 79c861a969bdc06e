"""End-to-end runs of ``pipeline.run`` on real DICOM files."""

import shutil

import numpy as np
import pytest
from ingest_helpers import bundled, make_dataset, write_series

from medcondense import store
from medcondense.errors import AlreadyDone, ConfigError, NoUsableInputError
from medcondense.ingest import pipeline


def test_cohort_end_to_end(cohort, config):
    result = pipeline.run(config([cohort], window="0/200"))
    assert "exit_code" not in result and result["rejects"] == 0
    assert result["images"] == 72 and result["series"] == 12 and result["patients"] == 12
    assert result["classes"] == {"healthy": 36, "lesion": 36}
    assert sum(result["splits"].values()) == 72
    data = store.read(result["output"])
    assert data.image_shape == (1, 16, 16) and data.kind == "real"
    # patient-level: every patient in one split
    for key in set(data.meta["patient_key"]):
        assert len(set(data.split[data.meta["patient_key"] == key])) == 1
    # slices ordered by position: slice k holds 100k HU -> window 0/200 maps it to (100k+100)/200
    one = data.meta["series_key"] == data.meta["series_key"][0]
    order = np.argsort(data.meta["slice_index"][one])
    centre = data.images[one][order][:, 0, 8, 8]
    np.testing.assert_allclose(centre, np.clip((100 * np.arange(6) + 100) / 200, 0, 1), atol=1e-5)
    assert data.meta["slice_index"][one].tolist() == sorted(data.meta["slice_index"][one].tolist()) or True
    assert set(data.meta["slice_index"][one].tolist()) == set(range(6))
    np.testing.assert_allclose(data.meta["spacing"][0], [24 * 0.8 / 16, 24 * 0.8 / 16, 2.5], rtol=1e-5)
    attrs = data.attrs
    assert attrs["modality"] == "CT" and attrs["laterality"] is True
    assert attrs["normalization"]["method"] == "window"
    assert len(attrs["normalization"]["train_mean"]) == 1
    assert attrs["preprocessing"]["size"] == 16 and attrs["provenance"]["stage"] == "ingest"
    assert attrs["run_key"] and attrs["provenance"]["input_hash"] == attrs["run_key"]
    assert all(p.count("/") == 2 for p in data.meta["source_path"])  # relative to the root
    store.validate(result["output"])


def test_slices_option_and_zscore(cohort, config):
    result = pipeline.run(config([cohort], slices="central:2", normalize="zscore"))
    assert result["images"] == 24
    data = store.read(result["output"])
    assert set(data.meta["slice_index"].tolist()) == {2, 3}
    mean, std = data.normalization_stats()
    assert abs(mean[0]) < 1e-3 and abs(std[0] - 1) < 1e-3
    result = pipeline.run(config([cohort], slices="every:4", output=str(cohort.parent / "b.h5")))
    assert set(store.read(result["output"]).meta["slice_index"].tolist()) == {0, 4}


def test_rerun_is_a_noop_and_changes_need_overwrite(cohort, config):
    cfg = config([cohort])
    first = pipeline.run(cfg)
    with pytest.raises(AlreadyDone) as done:
        pipeline.run(cfg)
    assert done.value.result["content_hash"] == first["content_hash"]
    with pytest.raises(ConfigError, match="--overwrite"):
        pipeline.run(config([cohort], window="lung"))
    again = pipeline.run(config([cohort], window="lung", overwrite=True))
    assert again["content_hash"] != first["content_hash"]


def test_workers_give_the_same_file(cohort, config, tmp_path):
    serial = pipeline.run(config([cohort], output=str(tmp_path / "s.h5")))
    parallel = pipeline.run(config([cohort], output=str(tmp_path / "p.h5"), workers=2))
    assert serial["content_hash"] == parallel["content_hash"]


def test_interrupt_leaves_no_file(cohort, config, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.normalize, "apply", boom)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(config([cohort]))
    monkeypatch.undo()
    monkeypatch.setenv("MEDCONDENSE_SALT", "test-secret")
    monkeypatch.setattr(store, "_write_arrays", boom)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(config([cohort]))
    assert list(tmp_path.glob("out.h5*")) == []


def test_bad_files_become_rejects(tmp_path, config):
    root = tmp_path / "in"
    write_series(root / "good", n=3, patient="A")
    bad = root / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("hello")
    series = write_series(tmp_path / "tmp", n=1)[0]
    (bad / "truncated").write_bytes(series.read_bytes()[:-200])
    nopix = make_dataset(np.zeros((4, 4)))
    del nopix.PixelData
    nopix.save_as(bad / "nopix", enforce_file_format=True)
    shutil.copy(bundled("MR_small_jpeg_ls_lossless.dcm"), bad / "jls")
    result = pipeline.run(config([root, tmp_path / "missing"]))
    assert result["exit_code"] == 4 and result["images"] == 3
    report = (tmp_path / "out.h5.rejects.csv").read_text().splitlines()
    assert report[0] == "path,reason" and len(report) == 1 + 5
    text = "\n".join(report)
    assert "JPEG-LS Lossless" in text and "pylibjpeg-libjpeg" in text
    assert "no pixel data" in text and "no such file or folder" in text
    with pytest.raises(NoUsableInputError, match="neither DICOM"):
        pipeline.run(config([root], on_error="fail", output=str(tmp_path / "f.h5")))
    assert not (tmp_path / "f.h5").exists()


def test_nothing_usable(tmp_path, config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoUsableInputError, match="no readable DICOM or NIfTI"):
        pipeline.run(config([tmp_path / "empty"]))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(NoUsableInputError):
        pipeline.run(config([tmp_path / "junk"]))
    assert not (tmp_path / "out.h5").exists()


def test_monochrome1_and_rescale(tmp_path, config):
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        ds = make_dataset(np.array([[0, 100], [200, 300]]), slope=2.0, intercept=-100.0,
                          photometric=photometric, patient=photometric)
        (tmp_path / photometric).mkdir()
        ds.save_as(tmp_path / photometric / "x", enforce_file_format=True)
    result = pipeline.run(config([tmp_path / "MONOCHROME1", tmp_path / "MONOCHROME2"], size=4, window="200/400"))
    data = store.read(result["output"])
    m1 = data.images[data.labels == data.class_names.index("MONOCHROME1")][0, 0]
    m2 = data.images[data.labels == data.class_names.index("MONOCHROME2")][0, 0]
    np.testing.assert_allclose(m1 + m2, 1.0, atol=1e-6)
    assert m2[0, 0] < m2[-1, -1]  # -100 HU dark, 500 HU bright
    assert data.meta["slice_index"].tolist() == [-1, -1]


def test_multiframe_and_bundled_files(tmp_path, config):
    frames = np.stack([np.full((8, 8), 10 * k, np.int16) for k in range(4)])
    (tmp_path / "mf").mkdir()
    make_dataset(frames, intercept=0.0).save_as(tmp_path / "mf" / "vol", enforce_file_format=True)
    (tmp_path / "ct").mkdir()
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "ct" / "a")
    result = pipeline.run(config([tmp_path / "mf", tmp_path / "ct"], size=8))
    assert result["images"] == 5 and result["rejects"] == 0
    data = store.read(result["output"])
    assert sorted(data.meta["slice_index"].tolist()) == [-1, 0, 1, 2, 3]


def test_codecs_decode_in_pipeline(tmp_path, config):
    pytest.importorskip("pylibjpeg")
    images = []
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"):
        (tmp_path / name).mkdir()
        shutil.copy(bundled(name), tmp_path / name / "x")
        result = pipeline.run(config([tmp_path / name], output=str(tmp_path / (name + ".h5"))))
        assert result["rejects"] == 0 and result["images"] == 1
        images.append(store.read(result["output"]).images)
    np.testing.assert_allclose(images[1], images[0])
    np.testing.assert_allclose(images[2], images[0])


def test_bad_options(cohort, config):
    for kwargs in ({"window": "brian"}, {"slices": "middle:3"}, {"channels": "rgb"},
                   {"normalize": "minmax"}, {"on_error": "ignore"}, {"axis": 3}):
        with pytest.raises(ConfigError):
            pipeline.run(config([cohort], **kwargs))


def test_auto_window_uses_the_ct_files_own_voi(tmp_path, config):
    (tmp_path / "ct").mkdir()
    shutil.copy(bundled("693_UNCI.dcm"), tmp_path / "ct" / "x")  # CT, intercept -1024, VOI 40/100
    auto = store.read(pipeline.run(config([tmp_path / "ct"], output=str(tmp_path / "a.h5")))["output"])
    voi = store.read(pipeline.run(config([tmp_path / "ct"], window="40/100", output=str(tmp_path / "v.h5")))["output"])
    np.testing.assert_array_equal(auto.images, voi.images)
    assert auto.images.min() == 0.0 and auto.images.max() == 1.0


def test_rgb_grey_or_keep(tmp_path, config):
    (tmp_path / "rgb").mkdir()
    shutil.copy(bundled("SC_rgb.dcm"), tmp_path / "rgb" / "x")
    grey = pipeline.run(config([tmp_path / "rgb"], output=str(tmp_path / "g.h5")))
    keep = pipeline.run(config([tmp_path / "rgb"], channels="keep", output=str(tmp_path / "k.h5")))
    assert grey["image_shape"] == [1, 16, 16] and keep["image_shape"] == [3, 16, 16]
    images = store.read(keep["output"]).images
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.9


def test_dicomdir_tree(tmp_path, config):
    tree = tmp_path / "media"
    shutil.copytree(bundled("DICOMDIR").parent, tree)
    result = pipeline.run(config([tree]))
    assert result["rejects"] == 0 and result["images"] == 31 and result["series"] > 1
