"""Tests for medcondense.distill.coreset: random, herding and k-center selection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcondense.distill.coreset import CORESET_METHODS, embedding_net, select_coreset
from medcondense.errors import ConfigError
from medcondense.train import standardize


class _Identity(nn.Module):
    """An 'embedding' that is the flattened image itself, so distances are known by hand."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _points(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).view(len(rows), 1, 1, -1)


def _blob_tensors(blob_set):
    train = blob_set.part(0)
    mean, std = blob_set.normalization_stats()
    return standardize(train.images, mean, std), torch.as_tensor(train.labels)


@pytest.mark.parametrize("method", CORESET_METHODS)
def test_each_class_gets_exactly_ipc_of_its_own(method, blob_set):
    x, y = _blob_tensors(blob_set)
    idx = select_coreset(method, x, y, 3, net=None, generator=torch.Generator().manual_seed(0))
    assert idx.dtype == torch.long and idx.numel() == 12
    assert y[idx].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert len(set(idx.tolist())) == 12


def test_random_is_seeded():
    x, y = torch.randn(40, 1, 4, 4), torch.arange(40) % 2
    pick = lambda seed: select_coreset("random", x, y, 5, net=None, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(pick(1), pick(1))
    assert not torch.equal(pick(1), pick(2))


def test_herding_follows_the_running_mean_by_hand():
    # 1-D points of one class; mean = 2.0. Step 1: closest to 2 -> 2.1 (index 2).
    # Step 2: (2.1 + p) / 2 closest to 2 -> p = 1.9 (index 3). Step 3: (4.0 + p) / 3 for the
    # candidates 0, 5, 1 gives 1.33, 3.0, 1.67 -> p = 1.0 (index 4).
    x = _points([[0.0], [5.0], [2.1], [1.9], [1.0]])
    y = torch.zeros(5, dtype=torch.long)
    idx = select_coreset("herding", x, y, 3, net=_Identity(), generator=torch.Generator())
    assert idx.tolist() == [2, 3, 4]


def test_kcenter_starts_at_the_mean_then_goes_far():
    # mean = (0 + 1 + 2 + 10 + 11) / 5 = 4.8 -> start at 2.0; farthest from it: 11; then 0
    # (distance 2 to {2, 11}) beats 1 (1) and 10 (1).
    x = _points([[0.0], [1.0], [2.0], [10.0], [11.0]])
    y = torch.zeros(5, dtype=torch.long)
    idx = select_coreset("kcenter", x, y, 3, net=_Identity(), generator=torch.Generator())
    assert idx.tolist() == [2, 4, 0]


def test_selection_happens_within_each_class():
    x = _points([[0.0], [100.0], [1.0], [101.0], [2.0], [102.0]])
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    idx = select_coreset("herding", x, y, 1, net=_Identity(), generator=torch.Generator())
    assert idx.tolist() == [2, 3]  # the class medians, not the global one


def test_too_few_images_in_a_class_is_a_config_error():
    x, y = torch.randn(7, 1, 4, 4), torch.tensor([0, 0, 0, 0, 1, 1, 1])
    with pytest.raises(ConfigError, match="class 1: 3"):
        select_coreset("random", x, y, 4, net=None, generator=torch.Generator())
    with pytest.raises(ConfigError, match="class 2: 0"):
        select_coreset("random", x, y, 1, net=None, generator=torch.Generator(), num_classes=3)
    with pytest.raises(ConfigError, match="expected one of random, herding, kcenter"):
        select_coreset("greedy", x, y, 1, net=None, generator=torch.Generator())


def test_trained_embedding_net_is_usable_and_deterministic(blob_set):
    x, y = _blob_tensors(blob_set)
    picks = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(0)
        net = embedding_net(x, y, 4, epochs=1, generator=gen)
        picks.append(select_coreset("kcenter", x, y, 2, net=net, generator=gen))
    assert torch.equal(picks[0], picks[1])
    assert y[picks[0]].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
