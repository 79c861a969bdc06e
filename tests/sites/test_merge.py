"""``medcondense merge`` on small in-memory sets: kinds, intensity spaces, classes by name,
sites, provenance, nothing identifying, atomic output and exit codes."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from blob_data import make_blob_set
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app
from medcondense.config import MergeConfig
from medcondense.errors import DataMismatchError
from medcondense.merge import pipeline as merge

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["merge", *map(str, args)])


def real_site(seed: int, site: str) -> store.ImageSet:
    s = make_blob_set(per_class=(4, 1, 2), seed=seed)
    s.meta["site"] = np.array([site] * s.n, dtype=object)
    return s


def synthetic(real: store.ImageSet, method: str = "dm") -> store.ImageSet:
    """What distill writes: 2 images a class, no identifying meta, the real set's attributes."""
    keep = np.concatenate([np.flatnonzero(real.labels == c)[:2] for c in range(real.num_classes)])
    return store.ImageSet(
        images=real.images[keep], labels=real.labels[keep], split=np.zeros(len(keep), np.uint8),
        class_names=list(real.class_names), kind="synthetic", meta={"spacing": real.meta["spacing"][keep]},
        attrs={**{k: real.attrs[k] for k in ("normalization", "preprocessing", "modality", "laterality")},
               "method": method, "ipc": 2, "source_hash": store.content_hash(real)},
    )


def write(tmp_path: Path, name: str, image_set: store.ImageSet) -> Path:
    path = tmp_path / name
    store.write(path, image_set)
    return path


def test_synthetic_plus_real_is_exit_2_and_allow_mixed_writes_kind_mixed(tmp_path) -> None:
    a = real_site(0, "a")
    real, syn = write(tmp_path, "a.h5", a), write(tmp_path, "syn_b.h5", synthetic(real_site(1, "b")))
    result = invoke(real, syn, "-o", tmp_path / "m.h5")
    assert result.exit_code == 2 and "refusing to mix kinds" in result.output and "--allow-mixed" in result.output
    assert not list(tmp_path.glob("*m.h5*"))
    result = invoke(real, syn, "-o", tmp_path / "m.h5", "--allow-mixed", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["schema"] == store.SCHEMA_V2
    mixed = store.read(tmp_path / "m.h5", verify_hash=True)
    assert mixed.kind == "mixed" and store.read_attrs(tmp_path / "m.h5")["schema"] == "medcondense/2"
    # synthetic images have no patient behind them; the real ones keep a site-prefixed key
    from_syn = mixed.meta["site"] == "syn_b"
    assert set(mixed.meta["patient_key"][from_syn]) == {""}
    assert all(k.startswith("a:") for k in mixed.meta["patient_key"][~from_syn])
    # treated as real everywhere: DICOM export needs --allow-real, distill refuses it
    result = runner.invoke(app, ["export", str(tmp_path / "m.h5"), "--format", "dicom", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--allow-real" in result.output
    result = runner.invoke(app, ["distill", str(tmp_path / "m.h5"), "-o", str(tmp_path / "s.h5"), "--method", "dm"])
    assert result.exit_code == 2 and "is a mixed set" in result.output


def test_provenance_lists_every_part(tmp_path) -> None:
    parts = [write(tmp_path, f"{n}.h5", synthetic(real_site(i, n), method=m))
             for i, (n, m) in enumerate((("a", "dm"), ("b", "dsa")))]
    result = invoke(*parts, "-o", tmp_path / "m.h5", "--site-names", "hospital_a,hospital_b", "--json")
    assert result.exit_code == 0, result.output
    merged = store.read(tmp_path / "m.h5", verify_hash=True)
    hashes = [store.read_attrs(p)["content_hash"] for p in parts]
    assert [p["content_hash"] for p in merged.attrs["parts"]] == hashes
    assert [p["content_hash"] for p in merged.attrs["provenance"]["parts"]] == hashes
    assert [p["sites"] for p in merged.attrs["parts"]] == [["hospital_a"], ["hospital_b"]]
    assert merged.attrs["provenance"]["stage"] == "merge"
    assert merged.kind == "synthetic" and merged.attrs["method"] == "dm+dsa" and merged.attrs["ipc"] == 4
    assert store.read_attrs(tmp_path / "m.h5")["schema"] == store.SCHEMA  # no schema-2 feature used
    # nothing identifying in a merged synthetic set; every image says where it came from
    assert set(merged.meta) == {"site", "spacing"}
    assert list(np.unique(merged.meta["site"])) == ["hospital_a", "hospital_b"]


def test_patient_keys_of_two_sites_never_collide(tmp_path) -> None:
    a, b = real_site(0, "a"), real_site(1, "b")
    assert set(a.meta["patient_key"]) == set(b.meta["patient_key"])  # e.g. one salt at both sites
    merged, _ = merge.build([merge.Part(Path("a.h5"), a, None), merge.Part(Path("b.h5"), b, None)], "real")
    keys = merged.meta["patient_key"]
    assert len(set(keys)) == len(set(a.meta["patient_key"])) * 2
    assert not set(keys[merged.meta["site"] == "a"]) & set(keys[merged.meta["site"] == "b"])
    assert all(p.startswith("b/") for p in merged.meta["source_path"][merged.meta["site"] == "b"])
    assert np.array_equal(merged.split, np.concatenate([a.split, b.split]))


def zscored(s: store.ImageSet, mean: float, std: float) -> store.ImageSet:
    out = dataclasses.replace(s, images=(s.images - mean) / std, attrs=dict(s.attrs))
    out.attrs["normalization"] = {"method": "zscore", "params": {"mean": [mean], "std": [std]},
                                  "train_mean": [0.0], "train_std": [1.0]}
    out.attrs["preprocessing"] = {**s.attrs["preprocessing"], "normalization": "zscore"}
    return out


def test_zscore_part_is_mapped_into_the_first_parts_space(tmp_path) -> None:
    a, b = real_site(0, "a"), real_site(1, "b")
    merged, _ = merge.build([merge.Part(Path("a.h5"), a, None), merge.Part(Path("b.h5"), zscored(b, 0.4, 0.2), None)], "real")
    np.testing.assert_allclose(merged.images[merged.meta["site"] == "b"], b.images, atol=1e-5)
    assert merged.attrs["normalization"]["method"] == "window"
    # and the other way round: window values into a zscore space
    merged, _ = merge.build([merge.Part(Path("b.h5"), zscored(b, 0.4, 0.2), None), merge.Part(Path("a.h5"), a, None)], "real")
    np.testing.assert_allclose(merged.images[merged.meta["site"] == "a"], (a.images - 0.4) / 0.2, atol=1e-5)


def test_ct_parts_with_other_clip_bounds_are_refused(tmp_path) -> None:
    def ct(s, low):
        out = zscored(s, 0.4, 0.2)
        out.attrs["normalization"]["method"] = "ct"
        out.attrs["normalization"]["params"].update(clip_low=[low], clip_high=[1.0])
        return out

    a, b = write(tmp_path, "a.h5", ct(real_site(0, "a"), 0.0)), write(tmp_path, "b.h5", ct(real_site(1, "b"), 0.1))
    result = invoke(a, b, "-o", tmp_path / "m.h5")
    assert result.exit_code == 2 and "ct normalization clips" in result.output and "ct clip [0.1]..[1] vs ct clip [0]..[1]" in result.output
    same = write(tmp_path, "c.h5", ct(real_site(2, "c"), 0.0))
    assert invoke(a, same, "-o", tmp_path / "m.h5").exit_code == 0


def test_classes_are_aligned_by_name_and_an_absent_class_is_warned(tmp_path, caplog) -> None:
    a = real_site(0, "a")
    b = real_site(1, "b")
    b = b.select(b.labels != 0)  # site b has no class0
    order = [3, 2, 1, 0]  # site b lists its classes in another order
    b = dataclasses.replace(b, class_names=[b.class_names[i] for i in order],
                            labels=np.array([order.index(int(k)) for k in b.labels], dtype=np.int64))
    with caplog.at_level(logging.WARNING, logger="medcondense"):
        merged, summary = merge.build([merge.Part(Path("a.h5"), a, None), merge.Part(Path("b.h5"), b, None)], "real")
    assert merged.class_names == a.class_names
    from_b = merged.meta["site"] == "b"
    assert [merged.class_names[k] for k in merged.labels[from_b]] == [b.class_names[k] for k in b.labels]
    assert summary["absent"] == {"class0": ["b"]}
    assert any("'class0' is absent at b" in r.getMessage() for r in caplog.records)


def test_a_class_only_one_site_has_is_appended(tmp_path) -> None:
    a, b = real_site(0, "a"), real_site(1, "b")
    b = dataclasses.replace(b, class_names=["class0", "class1", "class2", "extra"])
    merged, summary = merge.build([merge.Part(Path("a.h5"), a, None), merge.Part(Path("b.h5"), b, None)], "real")
    assert merged.class_names == ["class0", "class1", "class2", "class3", "extra"]
    assert summary["absent"] == {"extra": ["a"], "class3": ["b"]}


def test_pooled_train_statistics(tmp_path) -> None:
    a, b = real_site(0, "a"), real_site(1, "b")
    b = dataclasses.replace(b, images=b.images * 0.5)
    merged, _ = merge.build([merge.Part(Path("a.h5"), a, None), merge.Part(Path("b.h5"), b, None)], "real")
    train = merged.images[merged.split == store.SPLIT_TRAIN]
    np.testing.assert_allclose(merged.attrs["normalization"]["train_mean"], [train.mean()], rtol=1e-5)
    np.testing.assert_allclose(merged.attrs["normalization"]["train_std"], [train.std()], rtol=1e-4)


def test_usage_errors_and_reruns(tmp_path) -> None:
    a, b = write(tmp_path, "a.h5", real_site(0, "a")), write(tmp_path, "b.h5", real_site(1, "b"))
    out = tmp_path / "m.h5"
    for args, reason in (((a,), "at least two sets"), ((a, a), "the same file is given twice"),
                         ((a, b, "--site-names", "x"), "1 name(s) for 2 inputs"), ((a, b), "needs an output file")):
        result = invoke(*args, *(() if reason == "needs an output file" else ("-o", out)))
        assert result.exit_code == 2 and reason in result.output, result.output
    assert invoke(a, tmp_path / "nope.h5", "-o", out).exit_code == 3
    assert invoke(a, b, "-o", out).exit_code == 0
    again = invoke(a, b, "-o", out, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] is True
    result = invoke(a, b, "-o", out, "--site-names", "x,y")
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert invoke(a, b, "-o", out, "--site-names", "x,y", "--overwrite").exit_code == 0
    assert list(np.unique(store.read(out).meta["site"])) == ["x", "y"]


def test_image_size_and_channel_mismatch_name_the_setting(tmp_path) -> None:
    a = real_site(0, "a")
    small = make_blob_set(per_class=(4, 1, 2), size=8)
    rgb = make_blob_set(per_class=(4, 1, 2), channels=3)
    for other, words in ((small, "image size (--size) differs: 8x8 px vs 16x16 px"), (rgb, "channels differ: 3 vs 1")):
        with pytest.raises(DataMismatchError, match=words.replace("(", r"\(").replace(")", r"\)")):
            merge.check_compatible([merge.Part(Path("a.h5"), a, None), merge.Part(Path("o.h5"), other, None)])


def test_run_writes_atomically_on_failure(tmp_path) -> None:
    a, b = write(tmp_path, "a.h5", real_site(0, "a")), write(tmp_path, "b.h5", make_blob_set(size=8))
    with pytest.raises(DataMismatchError):
        merge.run(MergeConfig(inputs=[str(a), str(b)], output=str(tmp_path / "m.h5")))
    assert not list(tmp_path.glob("*m.h5*"))


def test_merge_needs_no_torch_or_image_readers(tmp_path) -> None:
    import subprocess
    import sys

    a, b = write(tmp_path, "a.h5", real_site(0, "a")), write(tmp_path, "b.h5", real_site(1, "b"))
    code = ("import sys\n"
            "from medcondense.config import MergeConfig\n"
            "from medcondense.merge.pipeline import run\n"
            f"run(MergeConfig(inputs=[{str(a)!r}, {str(b)!r}], output={str(tmp_path / 'm.h5')!r}))\n"
            "print(sorted(m for m in ('torch', 'SimpleITK', 'pydicom', 'nibabel') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
