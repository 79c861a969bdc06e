"""Tests for medcondense.evaluate.protocol: seeded training and testing of fresh nets."""

from __future__ import annotations

import torch

from medcondense import store
from medcondense.evaluate import protocol as evaluate


def test_evaluate_images_is_seeded_and_counts_models(blob_set):
    mean, std = blob_set.normalization_stats()
    train, test = blob_set.part(store.SPLIT_TRAIN), blob_set.part(store.SPLIT_TEST)
    x, tx = (torch.as_tensor((s.images - mean[:, None, None]) / std[:, None, None]) for s in (train, test))
    run = lambda seed: evaluate.evaluate_images(
        x, train.labels, tx, test.labels, arch="mlp", models=3, settings=evaluate.TrainSettings(epochs=3),
        augment=evaluate.train_augment("dsa", laterality=True), device="cpu", seed=seed,
    )
    first, again = run(0), run(0)
    assert first == again
    assert first["models"] == 3 and first["epochs"] == 3 and first["train_images"] == 96
    assert len(first["accuracy"]["values"]) == 3
