"""``score DATA SYN`` with the membership audit: the report, the gates, every refusal's exit code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app
from medcondense.score import membership

from score_helpers import write_syn

# image units: the blob set has 12 non-member patients (too few) but 48 non-member images
FAST = ["--device", "cpu", "--mia-unit", "image", "--set", "score.embed_nets=1", "--set", "score.mia_bootstrap=200"]


@pytest.fixture
def half_copies(tmp_path: Path, blob_set: store.ImageSet) -> Path:
    """A "synthetic" file holding every other real train image (half the members, exactly)."""
    train = blob_set.part(store.SPLIT_TRAIN)
    rows = np.arange(0, train.n, 2)
    path = tmp_path / "half.h5"
    store.write(path, store.ImageSet(images=train.images[rows], labels=train.labels[rows],
                                     split=np.zeros(rows.size, np.uint8), class_names=blob_set.class_names,
                                     kind="synthetic", attrs={"method": "test", "ipc": 12}))
    return path


def _score(*args: str):
    return CliRunner().invoke(app, ["score", *args, "--json"])


def test_set_distance_finds_the_copied_half_and_reads_against_its_baselines(real_h5: Path, half_copies: Path):
    result = _score(str(real_h5), str(half_copies), *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ipc"] == [] and report["full_data"] is None  # no --ipc: no indicator
    privacy = report["syn"]["privacy"]
    block = privacy["mia"]["set_distance"]["synthetic"]
    assert block["auc"] >= 0.7 and block["tpr_at_1pct_fpr"] >= 0.45
    assert block["members"] == 96 and block["nonmembers"] == 48 and block["fpr_floor"] == pytest.approx(1 / 48, abs=1e-6)
    assert block["tpr_at_0.1pct_fpr"] is None and "1000" in block["tpr_at_0.1pct_fpr_note"]
    assert set(privacy["mia"]["set_distance"]) == {"synthetic", "random", "noise"}
    assert set(block["by_space"]) == {"pixel", "embedding"}
    assert privacy["mia_game"]["unit"] == "image" and privacy["mia_exchangeable"]["exchangeable"] is True
    assert "loss" not in privacy["mia"]


def test_loss_attack_and_the_auc_gate(real_h5: Path, half_copies: Path, tmp_path: Path):
    result = _score(str(real_h5), str(half_copies), *FAST, "--mia", "--mia-models", "1", "--set", "score.mia_epochs=3",
                    "--max-mia-auc", "0.6", "-o", str(tmp_path / "score.json"))
    assert result.exit_code == 5, result.output
    report = json.loads(result.stdout)
    assert set(report["syn"]["privacy"]["mia"]["loss"]) == {"synthetic", "random", "noise", "full"}
    assert "set_distance AUC" in result.output  # the gate says which attack exceeded it
    assert json.loads((tmp_path / "score.json").read_text())["syn"]["privacy"]["mia"]
    again = _score(str(real_h5), str(half_copies), *FAST, "--mia", "--mia-models", "1", "--set", "score.mia_epochs=3")
    cached = json.loads(again.stdout)["syn"]["privacy"]["mia"]
    assert cached["loss"]["full"]["cached"] is True and cached["set_distance"]["noise"]["cached"] is True
    # a set of another size (IPC) gets its own random and noise baselines, but the full model
    # trained on the train split is the same one: not trained again
    quarter = tmp_path / "quarter.h5"
    copies = store.read(half_copies)
    rows = np.arange(0, copies.n, 2)
    store.write(quarter, store.ImageSet(images=copies.images[rows], labels=copies.labels[rows],
                                        split=copies.split[rows], class_names=copies.class_names,
                                        kind="synthetic", attrs={"method": "test", "ipc": 6}))
    other = _score(str(real_h5), str(quarter), *FAST, "--mia", "--mia-models", "1", "--set", "score.mia_epochs=3")
    assert other.exit_code == 0, other.output
    loss = json.loads(other.stdout)["syn"]["privacy"]["mia"]["loss"]
    assert loss["full"]["cached"] is True and loss["random"]["cached"] is False


@pytest.mark.parametrize("args,message", [
    (["--mia-shadows", "3"], "even"),
    (["--max-mia-auc", "1.5"], "--max-mia-auc"),
    (["--max-mia-tpr", "-0.1"], "--max-mia-tpr"),
    (["--mia-nonmembers", "train"], "--mia-nonmembers"),
])
def test_bad_audit_options_exit_2(real_h5: Path, half_copies: Path, args, message):
    result = _score(str(real_h5), str(half_copies), *FAST, *args)
    assert result.exit_code == 2 and message in result.output


def test_mia_without_a_synthetic_file_exits_2(real_h5: Path):
    result = _score(str(real_h5), "--mia", "--device", "cpu")
    assert result.exit_code == 2 and "--mia" in result.output


def test_too_few_non_member_units_exit_3_when_the_audit_is_asked_for(real_h5: Path, half_copies: Path):
    result = _score(str(real_h5), str(half_copies), "--device", "cpu", "--mia-unit", "patient", "--mia")
    assert result.exit_code == 3 and "20 non-member" in result.output
    plain = _score(str(real_h5), str(half_copies), "--device", "cpu", "--set", "score.embed_nets=1")
    assert plain.exit_code == 0  # a plain `score DATA SYN` reports why the always-on attack is absent
    assert "20 non-member" in json.loads(plain.stdout)["syn"]["privacy"]["mia_skipped"]


def test_a_set_distilled_from_other_data_exits_2(real_h5: Path, tmp_path: Path, blob_set):
    path = write_syn(tmp_path / "other.h5", np.random.default_rng(0).random((4, 1, 16, 16)), blob_set.class_names)
    image_set = store.read(path)
    image_set.attrs["source_hash"] = "0" * 64
    store.write(path, image_set, overwrite=True)
    result = _score(str(real_h5), str(path), *FAST, "--mia")
    assert result.exit_code == 2 and "source" in result.output


def test_gates_cannot_judge_splits_that_are_not_exchangeable():
    audit = {"mia": {"set_distance": {"synthetic": {"auc": 0.9, "tpr_at_1pct_fpr": 0.5}}},
             "exchangeability": {"exchangeable": False, "note": "splits not exchangeable", "reason": "noise AUC"}}
    code, reasons = membership.gate(audit, max_auc=0.6, max_tpr=None)
    assert code == 3 and "not exchangeable" in reasons[0]
    audit["exchangeability"] = {"exchangeable": True}
    assert membership.gate(audit, max_auc=0.6, max_tpr=None)[0] == 5
    assert membership.gate(audit, max_auc=0.95, max_tpr=0.6) == (0, [])
