import numpy as np
import pytest

from medcondense.errors import ConfigError
from medcondense.ingest import normalize


def images():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 20, size=(20, 2, 8, 8)).astype(np.float32)
    x[:, :, 0, 0] = -1000  # background
    return x


def test_zscore_uses_train_statistics_only():
    x = images()
    train = np.arange(20) < 10
    x[~train] += 500  # shifted val/test must not move the statistics
    params = normalize.fit(x, train, "zscore")
    out = normalize.apply(x.copy(), "zscore", params)
    attr = normalize.normalization_attr(out, train, "zscore", params)
    assert np.allclose(attr["train_mean"], 0, atol=1e-4) and np.allclose(attr["train_std"], 1, atol=1e-4)
    assert out[~train].mean() > out[train].mean() + 1


def test_ct_clips_foreground_percentiles():
    x = images()
    train = np.ones(20, bool)
    params = normalize.fit(x, train, "ct", (0.5, 99.5))
    assert min(params["clip_low"]) > -1000  # the background is not foreground
    out = normalize.apply(x.copy(), "ct", params)
    for ch in range(2):
        low = (params["clip_low"][ch] - params["mean"][ch]) / params["std"][ch]
        assert out[:, ch].min() >= low - 1e-4
    assert set(normalize.normalization_attr(out, train, "ct", params)) == {"method", "params", "train_mean", "train_std"}


def test_window_keeps_values_and_unknown_method_raises():
    x = images()
    assert normalize.apply(x, "window", normalize.fit(x, np.ones(20, bool), "window")) is x
    with pytest.raises(ConfigError, match="normalize"):
        normalize.check_method("minmax")


def test_chunked_channel_stats_match_numpy():
    x = images()
    rows = np.arange(20) % 3 == 0
    mean, std = normalize.channel_stats(x, rows, chunk=3)
    np.testing.assert_allclose(mean, x[rows].mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(std, x[rows].std(axis=(0, 2, 3), dtype=np.float64), rtol=1e-6)
    assert normalize.channel_stats(x, np.zeros(20, bool)) == ([0.0, 0.0], [1.0, 1.0])


def test_channel_stats_views_and_in_place_squares_change_no_bit() -> None:
    """channel_stats takes consecutive rows as a view and squares in place (#16 speed): the
    recorded train mean/std must equal, bit for bit, the plain fancy-index / three-buffer form."""
    import numpy as np

    from medcondense.ingest import normalize

    def plain(images, rows):
        index = np.flatnonzero(rows)
        count = index.size * images.shape[2] * images.shape[3]
        mean = images[index].sum(axis=(0, 2, 3), dtype=np.float64) / count
        squares = np.square(images[index].astype(np.float64) - mean[None, :, None, None]).sum(axis=(0, 2, 3))
        return [float(v) for v in mean], [float(v) for v in np.sqrt(squares / count)]

    rng = np.random.default_rng(1)
    images = rng.random((60, 3, 12, 12), dtype=np.float32) * 3 - 1
    for rows in (np.ones(60, bool), rng.random(60) < 0.6, np.r_[np.zeros(5, bool), np.ones(50, bool), np.zeros(5, bool)]):
        assert normalize.channel_stats(images, rows) == plain(images, rows)
