"""DP-DM's release and accounting (medcondense.distill.dp): clipping, sigma, fresh noise, refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from medcondense import store
from medcondense.distill import dp
from medcondense.errors import ConfigError
from medcondense.nets import build_net

from blob_data import make_blob_set


def _bank(queries: int = 3) -> dp.QueryBank:
    return dp.QueryBank(queries, seed=0, make_net=lambda: build_net("convnet", 1, 4, 16, width=8, depth=2))


def _train():
    real = make_blob_set()
    train = real.part(store.SPLIT_TRAIN)
    x = (torch.as_tensor(train.images) - dp.FIXED_MEAN) / dp.FIXED_STD
    return x, train.labels, train.meta["patient_key"]


def test_one_unit_scaled_by_a_million_moves_the_clean_sum_by_at_most_the_clip():
    x, y, units = _train()
    clip = 0.3  # below the blocks' natural bound of 1, so clipping really bites
    target = units[0]
    keep = units != target
    bank = _bank()
    without, _ = dp.clean_statistics(bank, x[torch.as_tensor(keep)], y[keep], units[keep], 4, clip)
    loud = x.clone()
    loud[torch.as_tensor(~keep)] *= 1e6
    with_loud, norms = dp.clean_statistics(bank, loud, y, units, 4, clip)
    assert (norms > clip).any()
    moved = (with_loud.sums - without.sums).norm().item()
    assert 0 < moved <= clip * (1 + 1e-4)
    assert (with_loud.weights - without.weights).norm().item() <= 1 + 1e-6


def test_clip_rows_bounds_every_row():
    rows = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    assert dp.clip_rows(rows, 1.0).norm(dim=1).tolist() == pytest.approx([1.0, 0.5])


def test_sigma_is_opacus_for_two_releases():
    from opacus.accountants.utils import get_noise_multiplier

    expected = get_noise_multiplier(target_epsilon=8, target_delta=1e-5, sample_rate=1.0, steps=2)
    sigma = dp.noise_multiplier(8, 1e-5)  # with T = 50 queries: they are one block, not 50 releases
    assert sigma == expected
    assert dp.epsilon_spent(sigma, 1e-5) <= 8
    assert dp.noise_multiplier(1, 1e-5) > sigma


def test_two_releases_with_the_same_seed_draw_different_noise():
    x, y, units = _train()
    settings = dp.DPSettings(epsilon=8, delta=1e-5, queries=2)
    first = dp.release(_bank(2), x, y, units, 4, settings, sigma=1.0)
    second = dp.release(_bank(2), x, y, units, 4, settings, sigma=1.0)
    assert not torch.equal(first.sums, second.sums)
    clean = dp.release(_bank(2), x, y, units, 4, settings, sigma=0.0)
    assert torch.equal(clean.sums, dp.release(_bank(2), x, y, units, 4, settings, sigma=0.0).sums)


def test_targets_are_unit_weighted_class_means():
    x, y, _ = _train()
    bank = _bank(2)
    stats, norms = dp.clean_statistics(bank, x, y, None, 4, clip=1.0)
    # image units: blocks of norm 1 less the public margin, so rounding never lifts one above a clip of 1
    assert norms == pytest.approx(np.full(len(y), 1 - dp.ROUNDING_MARGIN), abs=1e-6)
    assert (norms <= 1.0).all()
    with torch.no_grad():
        expected = bank.features(1, x[torch.as_tensor(y == 2)]).mean(dim=0)
    assert torch.allclose(stats.targets()[1, 2], expected, atol=1e-5)
    assert stats.weights.tolist() == pytest.approx(np.bincount(y).tolist())


@pytest.mark.parametrize("field,value", [("epsilon", 0), ("epsilon", -1), ("delta", 1.0), ("delta", 0.02),
                                         ("clip", 0), ("unit", "site"), ("queries", 0), ("accountant", "gdp")])
def test_bad_settings_are_refused(field, value):
    settings = dp.DPSettings(epsilon=8, delta=1e-5)
    setattr(settings, field, value)
    with pytest.raises(ConfigError):
        dp.check_settings(settings, units=100)  # delta 0.02 >= 1/100


def test_missing_opacus_names_the_extra():
    code = ("import sys; sys.modules['opacus'] = None\n"
            "from medcondense.distill import dp\n"
            "try:\n    dp.noise_multiplier(8, 1e-5)\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "ConfigError" in out.stdout and "medcondense[dp]" in out.stdout, out.stdout + out.stderr
