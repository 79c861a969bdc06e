"""Membership-inference statistics and attacks (medcondense.score.mia) on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcondense import store
from medcondense.score import mia

from blob_data import make_blob_set


# --------------------------------------------------------------------------- statistics by hand


def test_auc_counts_ties_as_one_half():
    # pairs (member, non-member): (3,2)=1 (3,1)=1 (2,2)=.5 (2,1)=1 (2,2)=.5 (2,1)=1 -> 5/6
    assert mia.roc_auc([3, 2, 2], [2, 1]) == pytest.approx(5 / 6)
    assert mia.roc_auc([1, 1], [1, 1, 1]) == pytest.approx(0.5)
    assert mia.roc_auc([0, 0], [1, 2]) == 0.0


def test_tpr_at_fpr_keeps_the_false_positives_under_the_target():
    nonmembers = np.arange(100, dtype=float)  # 0..99
    members = [99.5, 98.5, 98.0, 50.0]
    # 1 % of 100 = 1 false positive allowed: the threshold is the 2nd largest non-member (98),
    # members strictly above it: 99.5 and 98.5
    assert mia.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.5)
    # 0 allowed: strictly above 99
    assert mia.tpr_at_fpr(members, nonmembers, 0.001) == pytest.approx(0.25)


def test_tpr_at_fpr_never_splits_tied_non_members():
    # one false positive allowed, but the two top non-members tie at 5: a threshold that lets one
    # through lets both through, so the rule must stay above 5 and the member at 5 does not count
    nonmembers = [5.0, 5.0] + [0.0] * 98
    assert mia.tpr_at_fpr([5.0, 6.0], nonmembers, 0.01) == pytest.approx(0.5)


def test_advantage_is_max_tpr_minus_fpr():
    assert mia.advantage([3, 4], [1, 2]) == pytest.approx(1.0)
    assert mia.advantage([1, 1], [1, 1]) == pytest.approx(0.0)
    # rule ">= 2": TPR 2/3, FPR 1/3
    assert mia.advantage([2, 2, 0], [2, 0, 0]) == pytest.approx(1 / 3)


def test_unit_scores_take_the_max_over_a_patients_images():
    assert mia.unit_scores([0.1, 0.9, 0.3, 0.2], ["b", "a", "b", "c"]).tolist() == [0.3, 0.9, 0.2]
    assert mia.unit_scores([0.1, 0.2], None).tolist() == [0.1, 0.2]


def test_summarize_reports_the_low_fpr_tpr_only_with_enough_non_members():
    rng = np.random.default_rng(0)
    small = mia.summarize(rng.normal(1, 1, 50), rng.normal(0, 1, 40), samples=200)
    assert small["tpr_at_0.1pct_fpr"] is None and "1000" in small["tpr_at_0.1pct_fpr_note"]
    assert small["fpr_floor"] == pytest.approx(1 / 40)
    assert small["members"] == 50 and small["nonmembers"] == 40
    lo, hi = small["auc_ci"]
    assert lo <= small["auc"] <= hi
    big = mia.summarize(rng.normal(1, 1, 1000), rng.normal(0, 1, 1000), samples=100)
    assert big["tpr_at_0.1pct_fpr"] is not None and len(big["tpr_at_0.1pct_fpr_ci"]) == 2


# --------------------------------------------------------------------------- attacks


def _flat(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(images).flatten(1)


def test_set_distance_finds_a_set_of_copied_train_images():
    real = make_blob_set()
    train, held = real.part(store.SPLIT_TRAIN), real.select(real.split != store.SPLIT_TRAIN)
    copied = np.arange(0, train.n, 2)  # half the train images, copied as they are
    centre = _flat(train.images).mean(dim=0)
    syn = _flat(train.images[copied])
    members = mia.set_distance_scores(_flat(train.images), train.labels, syn, train.labels[copied], centre)
    nonmembers = mia.set_distance_scores(_flat(held.images), held.labels, syn, train.labels[copied], centre)
    block = mia.summarize(members, nonmembers, samples=200)
    assert block["auc"] >= 0.7
    assert block["tpr_at_1pct_fpr"] >= 0.45


def test_loss_attack_catches_memorised_canaries():
    """A model trained on the train split with random labels can only memorise them."""
    from medcondense.nets import build_net
    from medcondense.train import TrainSettings, train_classifier

    real = make_blob_set()
    rng = np.random.default_rng(0)
    x = torch.as_tensor(real.images)
    canary = torch.as_tensor(rng.integers(0, real.num_classes, real.n))
    member = torch.as_tensor(real.split == store.SPLIT_TRAIN)
    torch.manual_seed(0)
    net = build_net("mlp", 1, real.num_classes, 16)
    train_classifier(net, x[member], canary[member], TrainSettings(epochs=150, lr=0.05, batch_size=32),
                     generator=torch.Generator().manual_seed(0))
    scores = mia.loss_scores([mia.model_confidence(net, x, canary)])
    block = mia.summarize(scores[member.numpy()], scores[~member.numpy()], samples=200)
    assert block["auc"] >= 0.8


def test_noise_set_floor_holds_one_half_with_exchangeable_splits():
    real = make_blob_set(per_class=(50, 0, 50), seed=3)  # 200 members, 200 non-members
    train, test = real.part(store.SPLIT_TRAIN), real.part(store.SPLIT_TEST)
    noise = torch.randn(4 * 10, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    noise_labels = np.repeat(np.arange(4), 10)
    centre = _flat(train.images).mean(dim=0)
    members = mia.set_distance_scores(_flat(train.images), train.labels, noise.flatten(1), noise_labels, centre)
    nonmembers = mia.set_distance_scores(_flat(test.images), test.labels, noise.flatten(1), noise_labels, centre)
    block = mia.summarize(members, nonmembers, samples=500)
    assert block["members"] >= 200 and block["nonmembers"] >= 200
    assert mia.ci_holds_half(block)
    assert mia.exchangeability({"set_distance": block}) == {"exchangeable": True}


def test_a_split_shift_shows_in_the_noise_floor():
    shifted = mia.summarize(np.random.default_rng(0).normal(0.5, 1, 300), np.random.default_rng(1).normal(0, 1, 300),
                            samples=300)
    verdict = mia.exchangeability({"set_distance": shifted})
    assert verdict["exchangeable"] is False and verdict["note"] == "splits not exchangeable"


def test_lira_beats_the_loss_attack_when_examples_differ_in_difficulty():
    """Per-example offsets (some images are just easy) drown the loss attack; LiRA subtracts them."""
    rng = np.random.default_rng(0)
    n, shadows = 400, 8
    offset = rng.normal(0, 3, n)  # per-example difficulty
    member = rng.random(n) < 0.5
    target = offset + 1.0 * member + rng.normal(0, 0.3, n)
    inside = mia.lira_splits(n, shadows, seed=1)
    shadow = offset[None] + 1.0 * inside + rng.normal(0, 0.3, (shadows, n))
    loss_auc = mia.roc_auc(target[member], target[~member])
    lira = mia.lira_scores(target, shadow, inside)
    lira_auc = mia.roc_auc(lira[member], lira[~member])
    assert lira_auc > loss_auc + 0.2
    assert lira_auc > 0.9


def test_lira_splits_put_every_candidate_in_half_the_shadows():
    inside = mia.lira_splits(30, 6, seed=0)
    assert inside.shape == (6, 30) and (inside.sum(axis=0) == 3).all()
    with pytest.raises(ValueError):
        mia.lira_splits(30, 5, seed=0)


def test_logit_confidence_is_log_odds_of_the_true_class():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    p = torch.softmax(logits, dim=1)[0, 0].item()
    assert mia.logit_confidence(logits, [0])[0] == pytest.approx(np.log(p / (1 - p)))
