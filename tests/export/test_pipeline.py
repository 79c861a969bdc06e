"""The export command end to end: formats, the output folder's life cycle, errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medcondense import store
from medcondense.config import ExportConfig
from medcondense.errors import AlreadyDone, ConfigError
from medcondense.export import pipeline


def test_all_formats_write_every_folder_and_the_card(cli, syn_h5: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli(syn_h5, "--format", "all", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc["formats"]) == ["png", "nifti", "dicom", "npz", "card"]
    assert doc["synthetic"] is True and doc["images"] == 12
    for name in ("grid.png", "png/metadata.csv", "dataset.json", "npz/syn.npz", "dicom/manifest.csv", "CARD.md", "card.json", "export.json"):
        assert (out / name).is_file(), name
    assert len(list((out / "dicom").rglob("*.dcm"))) == 12
    assert len(list((out / "nifti").rglob("*.nii.gz"))) == 12
    assert not list(tmp_path.glob("out.tmp-*"))


def test_comma_separated_formats_and_default_folder(cli, syn_h5: Path) -> None:
    result = cli(syn_h5, "--format", "npz,card")
    assert result.exit_code == 0, result.output
    out = syn_h5.with_name("syn_export")
    assert sorted(p.name for p in out.iterdir()) == ["CARD.md", "card.json", "export.json", "npz"]


def test_parse_formats_expands_all_and_keeps_card_last() -> None:
    assert pipeline.parse_formats(["card,png", "png"]) == ["png", "card"]
    assert pipeline.parse_formats(["all"])[-1] == "card"
    with pytest.raises(ConfigError, match="unknown export format 'jpeg'"):
        pipeline.parse_formats(["png,jpeg"])


def test_unknown_format_exits_2_and_writes_nothing(cli, syn_h5: Path, tmp_path: Path) -> None:
    result = cli(syn_h5, "--format", "tiff", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown export format 'tiff'" in result.output
    assert not (tmp_path / "out").exists()


def test_file_that_is_not_ours_exits_3(cli, tmp_path: Path) -> None:
    import h5py

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    result = cli(other, "-o", tmp_path / "out")
    assert result.exit_code == 3
    assert "other.h5" in result.output and "not a medcondense file" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_input_exits_3(cli, tmp_path: Path) -> None:
    result = cli(tmp_path / "nope.h5", "-o", tmp_path / "out")
    assert result.exit_code == 3 and "no such file" in result.output


def test_non_empty_output_needs_overwrite(cli, syn_h5: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli(syn_h5, "-o", out)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_empty_existing_output_is_fine(cli, syn_h5: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert cli(syn_h5, "-o", out).exit_code == 0
    assert (out / "grid.png").is_file()


def test_overwrite_replaces_the_old_folder_whole(cli, syn_h5: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli(syn_h5, "--format", "png", "-o", out).exit_code == 0
    (out / "stale.txt").write_text("old")
    result = cli(syn_h5, "--format", "npz", "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "npz"]
    assert not list(tmp_path.glob("out.*-*"))


def test_rerun_with_same_inputs_is_a_no_op(cli, syn_h5: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli(syn_h5, "--format", "npz", "-o", out).exit_code == 0
    stamp = (out / "npz" / "syn.npz").stat().st_mtime_ns
    again = cli(syn_h5, "--format", "npz", "-o", out)
    assert again.exit_code == 0 and "up to date" in again.output
    assert (out / "npz" / "syn.npz").stat().st_mtime_ns == stamp
    # other options are other work: refused without --overwrite
    assert cli(syn_h5, "--format", "png", "-o", out).exit_code == 2


def test_run_raises_already_done_with_the_previous_result(syn_h5: Path, tmp_path: Path) -> None:
    cfg = ExportConfig(input=str(syn_h5), output=str(tmp_path / "out"), formats=["npz"])
    first = pipeline.run(cfg)
    with pytest.raises(AlreadyDone) as done:
        pipeline.run(cfg)
    assert done.value.result["formats"] == first["formats"]


def test_a_failing_exporter_leaves_nothing_half_written(syn_h5: Path, tmp_path: Path, monkeypatch) -> None:
    from medcondense.export import npz

    out = tmp_path / "out"
    assert pipeline.run(ExportConfig(input=str(syn_h5), output=str(out), formats=["png"]))
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))

    def explode(ctx, root):
        (root / "npz").mkdir()
        (root / "npz" / "partial.npz").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(npz, "export", explode)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(ExportConfig(input=str(syn_h5), output=str(out), formats=["png", "npz"], overwrite=True))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert not list(tmp_path.glob("out.*-*"))


def test_subset_dicom_needs_allow_real(cli, subset_h5: Path, tmp_path: Path) -> None:
    result = cli(subset_h5, "--format", "dicom", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "--allow-real" in result.output and "subset" in result.output
    assert not (tmp_path / "out").exists()


def test_real_set_dicom_needs_allow_real(cli, real_h5: Path, tmp_path: Path) -> None:
    assert cli(real_h5, "--format", "all", "-o", tmp_path / "out").exit_code == 2
    assert cli(real_h5, "--format", "png,npz", "-o", tmp_path / "out").exit_code == 0


def test_bad_uid_root_exits_2(cli, syn_h5: Path, tmp_path: Path) -> None:
    result = cli(syn_h5, "--format", "dicom", "--uid-root", "1.2.03.x", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "uid-root" in result.output


def test_unreadable_report_exits_2(cli, syn_h5: Path, tmp_path: Path) -> None:
    bad = tmp_path / "report.json"
    bad.write_text("{not json")
    result = cli(syn_h5, "--format", "card", "--report", bad, "-o", tmp_path / "out")
    assert result.exit_code == 2 and "report.json" in result.output and "not JSON" in result.output
    assert cli(syn_h5, "--format", "card", "--report", tmp_path / "missing.json", "-o", tmp_path / "o2").exit_code == 2


def test_channels_a_format_cannot_hold_are_refused(blob_set, tmp_path: Path, cli) -> None:
    two = blob_set.select(np.arange(8))
    two.images = np.concatenate([two.images, two.images], axis=1)
    path = tmp_path / "two.h5"
    store.write(path, two)
    result = cli(path, "--format", "npz", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "nifti" in result.output
    assert cli(path, "--format", "nifti", "-o", tmp_path / "out").exit_code == 0


def test_render_prints_a_table(cli, syn_h5: Path, tmp_path: Path) -> None:
    result = cli(syn_h5, "--format", "png", "-o", tmp_path / "out")
    assert "SYNTHETIC" in result.stdout and "png" in result.stdout
