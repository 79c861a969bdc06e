"""The paper's indicator: random real subsets vs a full-data model."""

from __future__ import annotations

import numpy as np
import torch

from medcondense import store
from medcondense.score import indicator
from medcondense.train import TrainSettings, standardize


def _tensors(image_set: store.ImageSet):
    mean, std = image_set.normalization_stats()
    train, test = image_set.part(store.SPLIT_TRAIN), image_set.part(store.SPLIT_TEST)
    return (standardize(train.images, mean, std), torch.as_tensor(train.labels),
            standardize(test.images, mean, std), test.labels)


def test_subset_index_takes_ipc_per_class_and_all_of_a_small_class():
    labels = np.array([0] * 10 + [1] * 2)
    idx = indicator.subset_index(labels, 3, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [3, 2]
    assert len(set(idx.tolist())) == idx.size


def test_indicator_is_near_one_on_a_trivially_separable_set(blob_set):
    train_x, train_y, test_x, test_y = _tensors(blob_set)
    settings = TrainSettings(epochs=10)
    rnd = indicator.random_subset_accuracy(train_x, train_y, test_x, test_y, 4, ipc=1, repeats=2, settings=settings, seed=0)
    full = indicator.full_accuracy(train_x, train_y, test_x, test_y, 4, settings, full_steps=20, seed=0)
    assert full["accuracy"] >= 0.95
    assert rnd["mean"] / full["accuracy"] >= 0.9
    assert len(rnd["runs"]) == 2


def test_indicator_is_near_chance_when_labels_carry_no_signal(blob_set):
    train_x, _, test_x, test_y = _tensors(blob_set)
    rng = np.random.default_rng(0)
    shuffled = torch.as_tensor(rng.permutation(np.arange(train_x.shape[0]) % 4))
    rnd = indicator.random_subset_accuracy(train_x, shuffled, test_x, rng.permutation(test_y), 4, ipc=1,
                                           repeats=1, settings=TrainSettings(epochs=10), seed=0)
    assert rnd["mean"] < 0.6


def test_full_budget_caps_epochs_by_sgd_steps():
    settings = TrainSettings(epochs=300, batch_size=256)
    assert indicator.full_budget(settings, n_train=256 * 10, full_steps=2000).epochs == 200
    assert indicator.full_budget(settings, n_train=100, full_steps=2000).epochs == 300
