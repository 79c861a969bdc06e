"""Tests for medcondense.evaluate: accuracy on a separable set, baselines cache, sites, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medcondense import evaluate, store
from medcondense.cli import app
from medcondense.config import EvaluateConfig
from medcondense.errors import AlreadyDone, ConfigError, DataMismatchError, ShapeMismatch, StoreError
from blob_data import make_blob_set

REPORT_KEYS = {"real", "protocol", "results", "output", "plot", "run_key", "provenance"}
RESULT_KEYS = {"file", "kind", "method", "ipc", "train_images", "content_hash", "metrics", "baselines", "recovery"}


def _synthetic(real: store.ImageSet, per_class: int, *, method: str = "dm", shuffle_labels: bool = False) -> store.ImageSet:
    """A 'synthetic' set: the first real train images of each class, with no identifying meta."""
    train = real.part(store.SPLIT_TRAIN)
    idx = np.concatenate([np.flatnonzero(train.labels == k)[:per_class] for k in range(real.num_classes)])
    labels = train.labels[idx].copy()
    if shuffle_labels:
        labels = np.random.default_rng(0).permutation(labels)
    return store.ImageSet(
        images=train.images[idx], labels=labels, split=np.zeros(idx.size, np.uint8),
        class_names=list(real.class_names), kind="synthetic", attrs={"method": method, "ipc": per_class},
    )


@pytest.fixture
def syn_h5(tmp_path: Path, blob_set) -> Path:
    path = tmp_path / "syn_dm_ipc5.h5"
    store.write(path, _synthetic(blob_set, 5))
    return path


def _config(real_h5: Path, *inputs: Path, **options) -> EvaluateConfig:
    defaults = dict(models=2, epochs=6, arch="mlp", device="cpu", baselines=["random", "full"])
    return EvaluateConfig(inputs=[str(p) for p in inputs], real=str(real_h5), **{**defaults, **options})


def test_synthetic_from_real_train_images_reaches_high_accuracy(real_h5, syn_h5):
    # The reference ConvNet; baselines off to keep it quick (they are checked with the MLP below).
    report = evaluate.run(_config(real_h5, syn_h5, arch="convnet", models=2, epochs=5, baselines=[]))
    assert set(report) == REPORT_KEYS
    (result,) = report["results"]
    assert set(result) == RESULT_KEYS
    assert result["kind"] == "synthetic" and result["method"] == "dm" and result["ipc"] == 5
    assert result["metrics"]["accuracy"]["mean"] >= 0.9
    assert len(result["metrics"]["accuracy"]["values"]) == 2
    assert result["metrics"]["auc"]["mean"] >= 0.9
    assert len(result["metrics"]["per_class_recall"]["mean"]) == 4
    assert report["real"]["test_images"] == 32


def test_report_carries_both_baselines_and_recovery(real_h5, syn_h5):
    report = evaluate.run(_config(real_h5, syn_h5, epochs=20))
    (result,) = report["results"]
    assert set(result["baselines"]) == {"random", "full"}
    assert result["baselines"]["random"]["ipc"] == 5
    assert result["baselines"]["random"]["train_images"] == 20
    assert result["baselines"]["full"]["train_images"] == 96
    assert result["baselines"]["full"]["metrics"]["accuracy"]["mean"] >= 0.9
    assert result["recovery"]["accuracy"] == pytest.approx(
        result["metrics"]["accuracy"]["mean"] / result["baselines"]["full"]["metrics"]["accuracy"]["mean"]
    )
    assert report["protocol"]["full_baseline"] == {"epochs": 20, "step_budget": 1000, "steps": 20}
    text = _rendered(report)
    for expected in ("syn_dm_ipc5.h5", "random", "full", "class3", "recovery"):
        assert expected in text


def _rendered(report: dict) -> str:
    import io

    from rich.console import Console

    buffer = io.StringIO()
    evaluate.render(report, Console(file=buffer, width=80))
    return buffer.getvalue()


def test_wrong_labels_score_lower_than_right_ones(tmp_path, real_h5, blob_set, syn_h5):
    scrambled = tmp_path / "scrambled.h5"
    store.write(scrambled, _synthetic(blob_set, 5, shuffle_labels=True))
    report = evaluate.run(_config(real_h5, syn_h5, scrambled, epochs=30, baselines=[]))
    right, wrong = (r["metrics"]["accuracy"]["mean"] for r in report["results"])
    assert right > wrong + 0.3
    assert report["results"][0]["baselines"] == {} and report["results"][0]["recovery"] is None


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


def test_baselines_are_cached_by_content_hash(real_h5, syn_h5, monkeypatch):
    first = evaluate.run(_config(real_h5, syn_h5))
    cache = Path(str(real_h5) + ".baselines.json")
    assert cache.exists() and len(json.loads(cache.read_text())["entries"]) == 2

    def must_not_train(*args, **kwargs):
        raise AssertionError("baseline retrained although cached")

    monkeypatch.setattr(evaluate, "_full_baseline", must_not_train)
    monkeypatch.setattr(evaluate, "_random_baseline", must_not_train)
    second = evaluate.run(_config(real_h5, syn_h5))
    base1, base2 = first["results"][0]["baselines"], second["results"][0]["baselines"]
    assert base2["full"]["cached"] is True and base1["full"]["cached"] is False
    assert base2["full"]["metrics"] == base1["full"]["metrics"]
    with pytest.raises(AssertionError, match="retrained"):
        evaluate.run(_config(real_h5, syn_h5, epochs=7))  # other epochs: another cache key


def test_full_baseline_budget_is_a_step_count():
    assert evaluate.full_baseline_epochs(96, 300, 256, 1000) == 300
    assert evaluate.full_baseline_epochs(50_000, 300, 256, 1000) == 6  # 196 batches an epoch
    assert evaluate.full_baseline_epochs(10**7, 300, 256, 1000) == 1


def test_cross_site_tests_one_site(real_h5, syn_h5):
    report = evaluate.run(_config(real_h5, syn_h5, test_site="siteA", baselines=[]))
    assert report["real"]["test_site"] == "siteA" and report["real"]["test_images"] == 16
    with pytest.raises(ConfigError, match="known sites: siteA, siteB"):
        evaluate.run(_config(real_h5, syn_h5, test_site="siteC"))


def test_a_file_without_sites_rejects_test_site(tmp_path, blob_set, syn_h5):
    blob_set.meta["site"] = np.array([""] * blob_set.n, dtype=object)
    real = tmp_path / "nosite.h5"
    store.write(real, blob_set)
    with pytest.raises(ConfigError, match="records no site"):
        evaluate.run(_config(real, syn_h5, test_site="siteA"))


def test_report_and_plot_are_written_and_reruns_skip(tmp_path, real_h5, blob_set, syn_h5):
    syn10 = tmp_path / "syn_dm_ipc10.h5"
    store.write(syn10, _synthetic(blob_set, 10))
    out = tmp_path / "report.json"
    report = evaluate.run(_config(real_h5, syn_h5, syn10, output=str(out), models=1, epochs=2))
    assert json.loads(out.read_text())["run_key"] == report["run_key"]
    png = tmp_path / "report.png"
    assert report["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(r["ipc"] for r in report["results"]) == [5, 10]
    with pytest.raises(AlreadyDone):
        evaluate.run(_config(real_h5, syn_h5, syn10, output=str(out), models=1, epochs=2))
    with pytest.raises(ConfigError, match="--overwrite"):
        evaluate.run(_config(real_h5, syn_h5, output=str(out), models=1, epochs=2))
    assert not list(tmp_path.glob("*.tmp"))


def test_mismatched_inputs_are_clear_errors(tmp_path, real_h5, blob_set, syn_h5):
    small = tmp_path / "small.h5"
    store.write(small, _synthetic(make_blob_set(size=8), 5))
    with pytest.raises(ShapeMismatch, match=r"expected shape \(1, 16, 16\), got \(1, 8, 8\)"):
        evaluate.run(_config(real_h5, small))
    renamed = _synthetic(blob_set, 5)
    renamed.class_names = ["a", "b", "c", "d"]
    other = tmp_path / "other.h5"
    store.write(other, renamed)
    with pytest.raises(DataMismatchError, match="class names"):
        evaluate.run(_config(real_h5, other))
    with pytest.raises(DataMismatchError, match="is a synthetic set"):
        evaluate.run(_config(syn_h5, syn_h5))
    no_test = blob_set.select(blob_set.split != store.SPLIT_TEST)
    path = tmp_path / "notest.h5"
    store.write(path, no_test)
    with pytest.raises(DataMismatchError, match="no test split"):
        evaluate.run(_config(path, syn_h5))


@pytest.mark.parametrize(
    "options, message",
    [({"models": 0}, "--models"), ({"arch": "vit"}, "--arch"), ({"train_aug": "mixup"}, "--train-aug"),
     ({"baselines": ["herding"]}, "--baselines"), ({"epochs": 0}, "--epochs")],
)
def test_bad_options_are_config_errors(real_h5, syn_h5, options, message):
    with pytest.raises(ConfigError, match=message):
        evaluate.run(_config(real_h5, syn_h5, **options))


def _cli(*args: str):
    return CliRunner().invoke(app, ["evaluate", *args])


def test_cli_exit_codes_for_bad_input(tmp_path, real_h5, blob_set, syn_h5):
    small = tmp_path / "small.h5"
    store.write(small, _synthetic(make_blob_set(size=8), 5))
    not_ours = tmp_path / "notes.h5"
    not_ours.write_text("not hdf5")
    cases = [
        ([str(small), "--real", str(real_h5)], 2, "expected shape"),
        ([str(syn_h5), "--real", str(syn_h5)], 2, "is a synthetic set"),
        ([str(syn_h5), "--real", str(real_h5), "--test-site", "nowhere"], 2, "known sites"),
        ([str(not_ours), "--real", str(real_h5)], 3, "not an HDF5 file"),
        ([str(syn_h5), "--real", str(tmp_path / "missing.h5")], 3, "no such file"),
    ]
    for args, code, message in cases:
        result = _cli(*args, "--device", "cpu")
        assert result.exit_code == code, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output


def test_cli_json_report(real_h5, syn_h5):
    result = _cli(str(syn_h5), "--real", str(real_h5), "--models", "1", "--epochs", "2", "--arch", "mlp",
                  "--baselines", "full", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == REPORT_KEYS
    assert set(report["results"][0]["baselines"]) == {"full"}


def test_store_errors_name_the_file(tmp_path, real_h5):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(StoreError, match="bad.h5"):
        evaluate.run(_config(real_h5, bad))
