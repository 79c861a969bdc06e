"""The data card: statements by kind, tolerant report reading, privacy audit, no identifiers."""

from __future__ import annotations

import json
from pathlib import Path

from medcondense import store
from medcondense.config import ExportConfig
from medcondense.export import card, pipeline

EVALUATE_REPORT = {
    "stage": "evaluate",
    "sets": [{"name": "syn.h5", "accuracy": {"mean": 0.81, "std": 0.02}, "balanced_accuracy_mean": 0.8,
              "per_model": [0.8, 0.82, 0.79, 0.83, 0.8, 0.81, 0.8, 0.82, 0.8, 0.81]}],
    "baselines": {"full": {"accuracy_mean": 0.93}, "random": {"accuracy_mean": 0.6}},
    "notes": "text is ignored",
}
SCORE_REPORT = {"mmd": 0.12, "coverage": 0.7, "privacy": {"near_copies": 1, "max_ssim": 0.96, "flagged": [3]}}


def export_card(path: Path, out: Path, reports: list[Path] = (), **options) -> dict:
    pipeline.run(ExportConfig(input=str(path), output=str(out), formats=["card"], report=[str(r) for r in reports], **options))
    return json.loads((out / "card.json").read_text())


def test_synthetic_card_with_reports(syn_h5: Path, tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps(EVALUATE_REPORT))
    (tmp_path / "score.json").write_text(json.dumps(SCORE_REPORT))
    data = export_card(syn_h5, tmp_path / "out", [tmp_path / "report.json", tmp_path / "score.json"], license="CC-BY-4.0")
    assert data["synthetic"] is True and "SYNTHETIC" in data["statement"]
    evaluate = data["results"]["report.json"]
    assert evaluate["sets[syn.h5].accuracy.mean"] == 0.81
    assert evaluate["baselines.full.accuracy_mean"] == 0.93
    assert evaluate["sets[syn.h5].per_model.mean_of_10"] == 0.808
    assert data["privacy_audit"]["score.json"] == {"privacy.near_copies": 1, "privacy.max_ssim": 0.96, "privacy.flagged[0]": 3}
    assert data["method"]["hyperparameters"] == {"lr_img": 1.0, "iterations": 20}
    assert [c["train"] for c in data["classes"]] == [3, 3, 3, 3]
    assert data["license"] == "CC-BY-4.0"
    md = (tmp_path / "out" / "CARD.md").read_text()
    for text in ("## Privacy audit", "privacy.near_copies", "## Licence and intended use", "CC-BY-4.0", "| class0 | 3 | 0 | 0 |"):
        assert text in md, text


def test_results_stored_in_the_file_are_shown(syn_set, tmp_path: Path) -> None:
    syn_set.attrs["evaluation"] = {"accuracy_mean": 0.7}
    store.write(tmp_path / "s.h5", syn_set)
    data = export_card(tmp_path / "s.h5", tmp_path / "out")
    assert data["results"] == {"file attribute evaluation": {"accuracy_mean": 0.7}}


def test_without_results_the_card_says_how_to_get_them(syn_h5: Path, tmp_path: Path) -> None:
    export_card(syn_h5, tmp_path / "out")
    md = (tmp_path / "out" / "CARD.md").read_text()
    assert "--report report.json" in md and "No privacy audit found" in md and "not set" in md


def test_subset_card_is_real_and_holds_no_identifier(subset_h5: Path, tmp_path: Path) -> None:
    image_set = store.read(subset_h5)
    data = export_card(subset_h5, tmp_path / "out")
    assert data["synthetic"] is False and data["kind"] == "subset"
    assert "REAL patient images" in data["statement"] and "not synthetic" in data["statement"]
    md = (tmp_path / "out" / "CARD.md").read_text()
    assert "synthetic" not in md.replace("not synthetic", "").lower()
    text = md + (tmp_path / "out" / "card.json").read_text()
    for name in ("source_path", "series_key", "patient_key"):
        assert not any(str(v) in text for v in image_set.meta[name]), name


def test_flatten_numbers_is_tolerant() -> None:
    rows = card.flatten_numbers({"a": {"b": 1, "c": [1.0, 2.0]}, "d": "x", "e": None, "f": True, "g": [{"k": 2}]})
    assert rows == {"a.b": 1, "a.c[0]": 1.0, "a.c[1]": 2.0, "f": 1.0, "g[0].k": 2}
    assert card.flatten_numbers(float("nan")) == {}


def test_long_lists_of_records_are_summarised() -> None:
    report = {"privacy": {"images": [{"index": i, "ssim": i / 10} for i in range(10)]}}
    rows = card.flatten_numbers(report)
    assert rows["privacy.images[*].ssim.max"] == 0.9
    assert rows["privacy.images[*].ssim.mean"] == 0.45
    assert not any("[3]" in key for key in rows)


MIA_BLOCK = {"auc": 0.71, "auc_ci": [0.65, 0.77], "tpr_at_1pct_fpr": 0.3, "tpr_at_1pct_fpr_ci": [0.2, 0.4],
             "tpr_at_0.1pct_fpr": None, "advantage": 0.35, "members": 96, "nonmembers": 64, "fpr_floor": 0.0156,
             "seconds": 1.5, "by_space": {"pixel": {"auc": 0.71}}}
MIA_REPORT = {"syn": {"privacy": {
    "near_copies": 0,
    "mia": {"set_distance": {"synthetic": MIA_BLOCK, "noise": {**MIA_BLOCK, "auc": 0.5}}},
    "mia_game": {"members": 96, "nonmembers": 64, "unit": "image"},
    "mia_exchangeable": {"exchangeable": True},
}}}


def test_card_copies_only_the_membership_numbers_and_says_there_is_no_dp(syn_h5: Path, tmp_path: Path) -> None:
    (tmp_path / "score.json").write_text(json.dumps(MIA_REPORT))
    data = export_card(syn_h5, tmp_path / "out", [tmp_path / "score.json"])
    block = data["membership_inference"]["score.json"]["attacks"]["set_distance"]["synthetic"]
    assert set(block) == {"auc", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_ci", "tpr_at_0.1pct_fpr",
                          "advantage", "members", "nonmembers"}
    assert not any(".mia" in key for rows in data["results"].values() for key in rows)
    assert data["differential_privacy"]["guarantee"] is False
    md = (tmp_path / "out" / "CARD.md").read_text()
    assert "WITHOUT differential privacy" in md
    assert "| set_distance | synthetic | 0.710 [0.650, 0.770] | 0.300 [0.200, 0.400] |" in md


def test_card_shows_the_dp_guarantee_of_a_dp_file(syn_set, tmp_path: Path) -> None:
    syn_set.attrs["dp"] = {"epsilon": 8.0, "delta": 1e-5, "epsilon_spent": 7.9, "noise_multiplier": 0.9, "clip": 1.0,
                           "unit": "patient", "queries": 50, "accountant": "rdp", "opacus_version": "1.6.0"}
    store.write(tmp_path / "dp.h5", syn_set)
    data = export_card(tmp_path / "dp.h5", tmp_path / "out")
    assert data["differential_privacy"]["guarantee"] is True and data["differential_privacy"]["epsilon"] == 8.0
    assert "(8.0, 1e-05)-DP per patient" in (tmp_path / "out" / "CARD.md").read_text()
