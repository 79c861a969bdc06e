"""An MTT set trains at its learned step size with DSA (mtt-distillation issue #29), unless
``--lr`` or ``--train-aug`` say otherwise; expert trajectory files are refused."""

from __future__ import annotations

import pytest

from medcondense import store
from medcondense.evaluate import pipeline as evaluate
from medcondense.errors import StoreError

from evaluate_helpers import evaluate_config, make_synthetic


@pytest.fixture
def mtt_h5(tmp_path, blob_set):
    syn = make_synthetic(blob_set, 2, method="mtt")
    syn.attrs["learned_lr"] = 0.0042
    path = tmp_path / "syn_mtt_ipc2.h5"
    store.write(path, syn)
    return path


def test_mtt_set_trains_at_its_learned_lr_with_dsa(real_h5, syn_h5, mtt_h5):
    report = evaluate.run(evaluate_config(real_h5, mtt_h5, syn_h5, models=1, epochs=1, baselines=[]))
    mtt, other = report["results"]
    assert mtt["protocol"]["lr"] == 0.0042 and mtt["protocol"]["train_aug"] == "dsa"
    assert "learned_lr" in mtt["protocol"]["source"]
    assert other["protocol"]["lr"] == 0.01 and other["protocol"]["train_aug"] == "none"
    assert report["protocol"]["lr"] == 0.01 and report["protocol"]["train_aug"] == "none"


@pytest.mark.parametrize("options,lr,aug", [(dict(lr=0.02), 0.02, "none"), (dict(train_aug="none"), 0.01, "none")])
def test_given_lr_or_train_aug_overrides_the_learned_lr(real_h5, mtt_h5, options, lr, aug):
    report = evaluate.run(evaluate_config(real_h5, mtt_h5, models=1, epochs=1, baselines=[], **options))
    (result,) = report["results"]
    assert result["protocol"]["lr"] == lr and result["protocol"]["train_aug"] == aug


def test_expert_files_are_refused(real_h5, tmp_path):
    import torch

    from medcondense.distill.experts import ExpertSettings, build_experts, experts_key

    settings = ExpertSettings(num_experts=1, train_epochs=1, net={"name": "convnet", "width": 8, "depth": 2, "norm": "instancenorm"})
    path = build_experts(tmp_path / "experts.h5", torch.randn(8, 1, 16, 16), torch.arange(4).repeat(2), 4, settings,
                         key=experts_key("x", settings), source_hash="x", class_names=list("abcd"))
    with pytest.raises(StoreError, match="expert trajectory file"):
        evaluate.run(evaluate_config(real_h5, path, models=1, epochs=1, baselines=[]))
