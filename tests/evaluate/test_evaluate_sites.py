"""Cross-site evaluate: ``--real A --real B`` and ``--per-site``; the per-site numbers equal
separate ``--test-site`` runs; classes aligned by name through a merge; score ``--per-site``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from blob_data import make_blob_set
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app
from medcondense.config import EvaluateConfig, MergeConfig, ScoreConfig
from medcondense.evaluate.pipeline import run as evaluate_run
from medcondense.merge.pipeline import run as merge_run

runner = CliRunner()
FAST = dict(models=2, epochs=5, arch="mlp", device="cpu")


def site_set(seed: int, site: str) -> store.ImageSet:
    s = make_blob_set(per_class=(8, 1, 4), seed=seed)
    s.meta["site"] = np.array([site] * s.n, dtype=object)
    s.attrs["sites"] = [site]
    return s


def synthetic_like(real: store.ImageSet, per_class: int = 3) -> store.ImageSet:
    """The first train images of each class as a 'synthetic' set carrying ``real``'s statistics
    (what distill writes: the source's normalization attribute)."""
    train = real.part(store.SPLIT_TRAIN)
    idx = np.concatenate([np.flatnonzero(train.labels == k)[:per_class] for k in range(real.num_classes)])
    return store.ImageSet(images=train.images[idx], labels=train.labels[idx], split=np.zeros(idx.size, np.uint8),
                          class_names=list(real.class_names), kind="synthetic",
                          attrs={"method": "dm", "ipc": per_class, "normalization": real.attrs["normalization"]})


@pytest.fixture
def two_sites(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    store.write(a, site_set(0, "a"))
    store.write(b, site_set(1, "b"))
    return a, b


def test_per_site_numbers_equal_separate_test_site_runs(two_sites, tmp_path) -> None:
    merged = tmp_path / "ab.h5"
    merge_run(MergeConfig(inputs=[str(p) for p in two_sites], output=str(merged)))
    syn = tmp_path / "syn.h5"
    store.write(syn, synthetic_like(store.read(merged)))
    report = evaluate_run(EvaluateConfig(inputs=[str(syn)], real=str(merged), per_site=True, baselines=[], **FAST))
    assert [s["name"] for s in report["sites"]] == ["a", "b"]
    for site in ("a", "b"):
        single = evaluate_run(EvaluateConfig(inputs=[str(syn)], real=str(merged), test_site=site, baselines=[], **FAST))
        assert report["results"][0]["per_site"][site]["metrics"] == single["results"][0]["metrics"]
    # pooled = all test images of the file: the plain run's numbers
    plain = evaluate_run(EvaluateConfig(inputs=[str(syn)], real=str(merged), baselines=[], **FAST))
    assert report["results"][0]["metrics"] == plain["results"][0]["metrics"]


def test_cross_site_trains_an_mtt_set_at_its_learned_lr_like_one_site(two_sites, tmp_path) -> None:
    a, b = two_sites
    syn = synthetic_like(store.read(a))
    syn.attrs.update(method="mtt", learned_lr=0.0042)
    path = tmp_path / "syn_mtt.h5"
    store.write(path, syn)
    report = evaluate_run(EvaluateConfig(inputs=[str(path)], real=[str(a), str(b)], baselines=[], **FAST))
    protocol = report["results"][0]["protocol"]
    assert protocol["lr"] == 0.0042 and protocol["train_aug"] == "dsa"
    single = evaluate_run(EvaluateConfig(inputs=[str(path)], real=str(a), baselines=[], **FAST))
    assert single["results"][0]["protocol"] == protocol


def test_several_real_files_report_layout(two_sites, tmp_path) -> None:
    a, b = two_sites
    syn = tmp_path / "syn_a.h5"
    store.write(syn, synthetic_like(store.read(a)))
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["evaluate", str(syn), str(a), "--real", str(a), "--real", str(b), "--models", "2",
                                 "--epochs", "5", "--arch", "mlp", "--device", "cpu", "--baselines", "random,full",
                                 "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["real"]["file"] == str(a) and report["real"]["content_hash"] == store.read_attrs(a)["content_hash"]
    assert [s["name"] for s in report["sites"]] == ["a", "b"]
    first = report["results"][0]
    assert set(first["per_site"]) == {"a", "b"}
    for site in ("a", "b"):
        block = first["per_site"][site]
        assert set(block) >= {"metrics", "baselines", "recovery"}
        assert set(block["baselines"]) == {"random", "full"}
        assert block["recovery"]["accuracy"] == pytest.approx(
            block["metrics"]["accuracy"]["mean"] / block["baselines"]["full"]["metrics"]["accuracy"]["mean"])
    assert first["mean_of_sites"]["accuracy"] == pytest.approx(
        np.mean([first["per_site"][s]["metrics"]["accuracy"]["mean"] for s in ("a", "b")]))
    assert first["metrics"]["accuracy"]["mean"] is not None  # pooled
    assert report["results"][1]["train_sites"] == {"a": 32}  # a real input: its train split, from site a
    # each site's baselines, trained at that site, tested at every site
    assert set(report["site_baselines"]) == {"a", "b"}
    assert set(report["site_baselines"]["a"]["full"]) == {"a", "b", "pooled"}


def test_classes_aligned_by_name_through_a_merge(tmp_path) -> None:
    a = site_set(0, "a")
    b = site_set(1, "b")
    order = [2, 3, 0, 1]  # site b lists the same classes in another order
    b = dataclasses.replace(b, class_names=[b.class_names[i] for i in order],
                            labels=np.array([order.index(int(k)) for k in b.labels], dtype=np.int64))
    for name, s in (("a.h5", a), ("b.h5", b)):
        store.write(tmp_path / name, s)
    merged = tmp_path / "ab.h5"
    merge_run(MergeConfig(inputs=[str(tmp_path / "a.h5"), str(tmp_path / "b.h5")], output=str(merged)))
    report = evaluate_run(EvaluateConfig(inputs=[str(merged)], real=str(merged), per_site=True, baselines=[],
                                         models=1, epochs=30, arch="mlp", device="cpu"))
    # a net trained on both sites recognises every class at site b: the labels followed the names
    recall_b = report["results"][0]["per_site"]["b"]["metrics"]["per_class_recall"]["mean"]
    assert min(recall_b) > 0.7, recall_b


@pytest.mark.parametrize("args, reason", [
    (["--per-site", "--real", "{a}", "--real", "{b}"], "--per-site reads the sites of one --real file"),
    (["--real", "{a}", "--real", "{b}", "--test-site", "a"], "--test-site"),
])
def test_cross_site_usage_errors(args, reason, two_sites, tmp_path) -> None:
    a, b = two_sites
    syn = tmp_path / "syn.h5"
    store.write(syn, synthetic_like(store.read(a)))
    args = [x.format(a=a, b=b) for x in args]
    result = runner.invoke(app, ["evaluate", str(syn), *args, "--models", "1", "--epochs", "1"])
    assert result.exit_code == 2 and reason in result.output, result.output


def test_per_site_needs_recorded_sites(real_h5, tmp_path) -> None:
    s = store.read(real_h5)
    s.meta.pop("site")
    store.write(tmp_path / "nosite.h5", s)
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nosite.h5"), "--real", str(tmp_path / "nosite.h5"),
                                 "--per-site", "--models", "1", "--epochs", "1"])
    assert result.exit_code == 2 and "records no site" in result.output


def test_score_per_site_needs_recorded_sites_before_any_work(real_h5, tmp_path) -> None:
    s = store.read(real_h5)
    s.meta.pop("site")  # no meta/site at all (was a KeyError, exit 1, after the whole score ran)
    store.write(tmp_path / "nosite.h5", s)
    result = runner.invoke(app, ["score", str(tmp_path / "nosite.h5"), "--per-site", "--ipc", "1", "--device", "cpu"])
    assert result.exit_code == 2 and "records no site" in result.output, result.output


def test_score_per_site_indicator_and_privacy(two_sites, tmp_path) -> None:
    from medcondense.score.pipeline import run as score_run

    merged = tmp_path / "ab.h5"
    merge_run(MergeConfig(inputs=[str(p) for p in two_sites], output=str(merged)))
    syn = tmp_path / "syn.h5"
    store.write(syn, synthetic_like(store.read(tmp_path / "a.h5")))  # copies of site a's train images
    result = score_run(ScoreConfig(data=str(merged), syn=str(syn), ipc=[1], repeats=1, epochs=3, full_steps=5,
                                   device="cpu", per_site=True, embed_nets=1))
    per_site = result["per_site"]
    assert set(per_site) == {"a", "b"}
    assert per_site["a"]["full_data"]["n_train"] == 32 and per_site["a"]["ipc"][0]["ipc"] == 1
    # the synthetic images are site a's train images: near-copies at a, none at b
    assert per_site["a"]["privacy"]["near_copies"] == 12
    assert per_site["b"]["privacy"]["near_copies"] == 0
