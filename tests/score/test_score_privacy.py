"""The privacy audit: exact copies are flagged, noise is not, subsets fail the gate."""

from __future__ import annotations

from pathlib import Path

from medcondense.score import pipeline as score
from medcondense.errors import EXIT_GATE

from score_helpers import quick_config, write_syn

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_an_exact_real_image_is_flagged_and_its_pair_saved(real_h5: Path, copy_syn: Path, tmp_path: Path):
    pairs = tmp_path / "pairs"
    result = score.run(quick_config(real_h5, syn=str(copy_syn), ipc=[], pairs_dir=str(pairs), fail_on_copies=True))
    audit = result["syn"]["privacy"]
    flagged = [img for img in audit["images"] if img["near_copy"]]
    assert [img["index"] for img in flagged] == [0]
    assert flagged[0]["real_index"] == 0 and flagged[0]["ssim"] > 0.999 and flagged[0]["cosine"] > 0.999
    assert audit["near_copies"] == 1
    assert "p99" in audit["real_vs_real"]["ssim"] and "p99" in audit["real_vs_real"]["cosine"]
    assert result["exit_code"] == EXIT_GATE
    saved = [Path(p) for p in result["syn"]["pairs"]]
    assert len(saved) == 1 and saved[0].read_bytes()[:8] == PNG_MAGIC
    assert not list(pairs.glob("*.tmp"))


def test_random_noise_is_not_flagged(real_h5: Path, noise_syn: Path):
    result = score.run(quick_config(real_h5, syn=str(noise_syn), ipc=[], fail_on_copies=True))
    audit = result["syn"]["privacy"]
    assert audit["near_copies"] == 0
    assert audit["syn_vs_real"]["ssim"]["max"] < 0.5
    assert result["exit_code"] == 0
    assert result["syn"]["pairs"] == []


def test_copies_without_the_gate_exit_zero(real_h5: Path, copy_syn: Path):
    result = score.run(quick_config(real_h5, syn=str(copy_syn), ipc=[]))
    assert result["syn"]["privacy"]["near_copies"] == 1 and result["exit_code"] == 0


def test_a_subset_is_reported_as_real_images_and_fails_the_gate(real_h5: Path, blob_set, tmp_path: Path, caplog):
    train = blob_set.part(0)
    subset = write_syn(tmp_path / "subset.h5", train.images[[0, 24, 48, 72]], blob_set.class_names, kind="subset")
    result = score.run(quick_config(real_h5, syn=str(subset), ipc=[], fail_on_copies=True))
    assert result["syn"]["kind"] == "subset"
    assert "REAL training images" in result["syn"]["note"]
    assert result["syn"]["privacy"]["near_copies"] == 4
    assert result["exit_code"] == EXIT_GATE
    assert "coreset of real images" in caplog.text
