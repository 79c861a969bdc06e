"""Cheap proxies and the syn-vs-real distances in random-ConvNet space."""

from __future__ import annotations

import numpy as np
import torch

from medcondense import store
from medcondense.score import distance, proxies
from medcondense.score.embedding import embed, random_nets, unit_rows
from medcondense.train import standardize


def _embedded(image_set: store.ImageSet, shuffle: bool = False) -> proxies.Embedded:
    mean, std = image_set.normalization_stats()
    train, test = image_set.part(store.SPLIT_TRAIN), image_set.part(store.SPLIT_TEST)
    nets = random_nets(1, 16, 2, seed=0, device=torch.device("cpu"))
    labels = train.labels
    if shuffle:
        labels = np.random.default_rng(0).permutation(labels)
    return proxies.Embedded(
        train=[unit_rows(embed(n, standardize(train.images, mean, std))) for n in nets],
        train_labels=torch.as_tensor(labels),
        test=[unit_rows(embed(n, standardize(test.images, mean, std))) for n in nets],
        test_labels=torch.as_tensor(test.labels), num_classes=4,
    )


def test_random_nets_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = random_nets(1, 16, 1, seed=5, device=torch.device("cpu"))[0]
    after = torch.rand(1)
    b = random_nets(1, 16, 1, seed=5, device=torch.device("cpu"))[0]
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_separable_classes_score_better_than_shuffled_labels(blob_set):
    real, shuffled = proxies.measure_proxies(_embedded(blob_set)), proxies.measure_proxies(_embedded(blob_set, True))
    assert real["fisher_ratio"]["value"] > 5 * shuffled["fisher_ratio"]["value"]
    assert real["knn_accuracy"]["value"] >= 0.95 > 0.6 > shuffled["knn_accuracy"]["value"]
    assert real["intra_diversity"]["value"] < shuffled["intra_diversity"]["value"]
    assert all(p["seconds"] >= 0 for p in real.values())


def test_ipc_proxies_improve_with_more_images_per_class(blob_set):
    emb = _embedded(blob_set)
    one, ten = proxies.measure_ipc_proxies(emb, 1, seed=0), proxies.measure_ipc_proxies(emb, 10, seed=0)
    assert one["prototype_accuracy"]["value"] >= 0.9
    assert ten["kcenter_radius"]["value"] < one["kcenter_radius"]["value"]
    assert 0 < ten["prototype_ratio"]["value"] <= 1.05


def test_a_set_matches_itself_and_noise_does_not(blob_set):
    emb = _embedded(blob_set)
    same = distance.compare_sets(emb.train, emb.train_labels, emb.train, emb.train_labels, blob_set.class_names, 0)
    assert same["mmd"] < 1e-4 and same["coverage"] == 1.0
    noise = [unit_rows(torch.rand(8, e.shape[1]) - 0.5) for e in emb.train]
    far = distance.compare_sets(emb.train, emb.train_labels, noise, torch.arange(8) % 4, blob_set.class_names, 0)
    assert far["mmd"] > far["mmd_random_subset"]
    assert far["coverage"] < far["coverage_random_subset"]
