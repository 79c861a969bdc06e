import numpy as np

from medcondense.ingest.resample import resample_slice, square_side_mm


def test_output_size_and_spacing():
    out, spacing = resample_slice(np.random.default_rng(0).normal(size=(512, 512)), (0.7, 0.7), 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert np.isclose(spacing, 512 * 0.7 / 64)


def test_anisotropic_is_padded_not_cropped():
    img = np.ones((40, 100), np.float32)
    img[:, :50] = 2.0  # left half brighter
    out, spacing = resample_slice(img, (2.0, 1.0), 20)  # 80 mm x 100 mm -> 100 mm square
    assert np.isclose(spacing, 5.0)
    assert out[0].max() == 1.0 and out[-1].max() == 1.0  # padding rows (the image minimum)
    assert out[10, 2] == 2.0 and out[10, -3] == 1.0


def test_target_spacing_rounds_the_square():
    assert square_side_mm((100, 50), (1.0, 1.0), 3.0) == 33 * 3.0
    assert square_side_mm((100, 50), (1.0, 1.0), None) == 100.0


def test_mask_uses_nearest_neighbour():
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 3
    out, _ = resample_slice(mask, (1.0, 1.0), 16, mask=True)
    assert set(np.unique(out)) <= {0.0, 3.0}
    assert (out == 3).any()


def test_downsampling_is_anti_aliased_and_centred():
    checker = (np.indices((512, 512)).sum(axis=0) % 2).astype(np.float32)
    out, _ = resample_slice(checker, (0.5, 0.5), 64)
    assert np.allclose(out, 0.5, atol=1e-5)  # no moire from the fine pattern
    halves = np.zeros((512, 512), np.float32)
    halves[:, 256:] = 1.0
    out, _ = resample_slice(halves, (0.5, 0.5), 64)
    assert out[:, :31].max() == 0.0 and out[:, 33:].min() == 1.0
    np.testing.assert_allclose(out[:, :32].mean() + out[:, 32:].mean(), 1.0, atol=1e-5)
