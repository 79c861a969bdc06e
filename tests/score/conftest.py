"""Score fixtures: a distilled-looking file that holds one exact real image, and one of noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medcondense import store

from score_helpers import write_syn


@pytest.fixture
def noise_syn(tmp_path: Path, blob_set: store.ImageSet) -> Path:
    """Four uniform-noise images: nothing like any real image."""
    rng = np.random.default_rng(1)
    return write_syn(tmp_path / "noise.h5", rng.random((4, 1, 16, 16)), blob_set.class_names)


@pytest.fixture
def copy_syn(tmp_path: Path, blob_set: store.ImageSet) -> Path:
    """Real train image 0 (class 0) followed by three noise images."""
    rng = np.random.default_rng(2)
    images = np.concatenate([blob_set.part(store.SPLIT_TRAIN).images[:1], rng.random((3, 1, 16, 16))])
    return write_syn(tmp_path / "copy.h5", images, blob_set.class_names)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: these nets are tiny, and CI boxes are shared (threads only thrash)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
