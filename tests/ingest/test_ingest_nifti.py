"""NIfTI through the pipeline: anisotropic 3D, 4D, canonical orientation, masks."""

import nibabel as nib
import numpy as np

from medcondense import store
from medcondense.ingest import nifti, pipeline


def save(path, data, zooms=(1.0, 1.0, 1.0), affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if affine is None:
        affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def test_helpers():
    vol = np.arange(24).reshape(2, 3, 4)
    assert nifti.take_slice(vol, 2, 1).shape == (3, 2)
    assert nifti.plane_spacing((1.0, 2.0, 3.0), 2) == (2.0, 1.0, 3.0)
    mask = np.zeros((2, 3, 4))
    mask[0, 0, 2] = 1
    assert nifti.mask_slices(mask, 2) == [2]


def test_anisotropic_3d_axis_and_canonical(tmp_path, config):
    data = np.zeros((20, 10, 6), np.float32)
    data[:10] = 100.0  # the first half along x is bright
    save(tmp_path / "in" / "a" / "vol.nii.gz", data, zooms=(1.0, 2.0, 3.0))
    flipped = np.diag([-1.0, 2.0, 3.0, 1.0])  # x stored right-to-left; canonical undoes it
    save(tmp_path / "in" / "b" / "vol.nii.gz", data, affine=flipped)
    result = pipeline.run(config([tmp_path / "in"], size=20, window="50/100"))
    assert result["images"] == 12 and result["modality"] == "MR"
    data_set = store.read(result["output"])
    a = data_set.images[data_set.labels == 0][0, 0]
    b = data_set.images[data_set.labels == 1][0, 0]
    assert a[10, 2] > 0.9 and a[10, -3] < 0.1  # columns follow x
    np.testing.assert_allclose(b, a[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(data_set.meta["spacing"][0], [1.0, 1.0, 3.0])  # 20 mm square / 20 px
    sagittal = pipeline.run(config([tmp_path / "in" / "a"], axis=0, output=str(tmp_path / "s.h5")))
    assert sagittal["images"] == 20


def test_4d_volumes_separately_or_as_channels(tmp_path, config):
    data = np.random.default_rng(0).normal(size=(8, 8, 4, 3)).astype(np.float32)
    save(tmp_path / "in" / "c" / "dwi.nii", data)
    separate = pipeline.run(config([tmp_path / "in"]))
    assert separate["images"] == 12 and separate["image_shape"] == [1, 16, 16]
    keep = pipeline.run(config([tmp_path / "in"], channels="keep", output=str(tmp_path / "k.h5")))
    assert keep["images"] == 4 and keep["image_shape"] == [3, 16, 16]


def test_mask_keeps_touched_slices(tmp_path, config):
    data = np.ones((8, 8, 10), np.float32)
    mask = np.zeros((8, 8, 10), np.uint8)
    mask[2:4, 2:4, 3:6] = 1
    save(tmp_path / "in" / "x" / "img.nii.gz", data)
    save(tmp_path / "in" / "x" / "img_mask.nii.gz", mask)
    save(tmp_path / "in" / "x" / "lonely.nii.gz", data)
    result = pipeline.run(config([tmp_path / "in"], mask_suffix="_mask"))
    assert result["images"] == 3 and result["rejects"] == 1
    assert sorted(store.read(result["output"]).meta["slice_index"].tolist()) == [3, 4, 5]


def test_broken_nifti_is_rejected(tmp_path, config):
    save(tmp_path / "in" / "ok" / "a.nii.gz", np.ones((4, 4, 2)))
    (tmp_path / "in" / "ok" / "b.nii.gz").write_bytes(b"not gzip")
    result = pipeline.run(config([tmp_path / "in"]))
    assert result["rejects"] == 1 and result["images"] == 2
