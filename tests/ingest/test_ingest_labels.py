import pytest
from ingest_helpers import write_series

from medcondense import store
from medcondense.errors import ConfigError
from medcondense.ingest import labels, pipeline


def test_manifest_with_absent_files_lists_them(tmp_path):
    (tmp_path / "a.dcm").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("path,label\na.dcm,x\nmissing1.dcm,y\nsub/missing2.dcm,y\n")
    with pytest.raises(ConfigError) as info:
        labels.read_manifest(tmp_path / "labels.csv")
    text = str(info.value)
    assert "labels.csv" in text and "missing1.dcm" in text and "sub/missing2.dcm" in text


def test_manifest_without_header_and_bad_split(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "l.csv").write_text("a,cat,P1,test,siteA\n")
    row = labels.read_manifest(tmp_path / "l.csv")[(tmp_path / "a").resolve()]
    assert row == labels.ManifestRow("cat", "P1", 2, "siteA")
    (tmp_path / "l.csv").write_text("a,cat,P1,holdout\n")
    with pytest.raises(ConfigError, match="unknown split"):
        labels.read_manifest(tmp_path / "l.csv")


def test_folder_label(tmp_path):
    assert labels.folder_label(tmp_path / "cls" / "p1" / "f", tmp_path) == ("cls", False)
    assert labels.folder_label(tmp_path / "f", tmp_path) == (tmp_path.name, True)
    assert labels.class_index(["b", "a", "b"]) == {"a": 0, "b": 1}


def test_csv_wins_unlisted_files_are_rejected(tmp_path, config):
    paths = write_series(tmp_path / "data" / "folder", n=3, patient="A")
    other = write_series(tmp_path / "data" / "folder2", n=2, patient="B")
    rows = ["path,label,patient,split,site"] + [f"folder/{p.name},tumour,X,test,north" for p in paths]
    (tmp_path / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    result = pipeline.run(config([tmp_path / "data"], labels_csv=str(tmp_path / "data" / "labels.csv")))
    assert result["classes"] == {"tumour": 3}
    assert result["rejects"] == 2 and result["exit_code"] == 4
    report = (tmp_path / "out.h5.rejects.csv").read_text()
    assert all(p.name in report for p in other) and "not listed in the labels CSV" in report
    data = store.read(tmp_path / "out.h5")
    assert set(data.split.tolist()) == {store.SPLIT_TEST}
    assert set(data.meta["site"].tolist()) == {"north"}


def test_label_tag(tmp_path, config):
    write_series(tmp_path / "x", n=2, patient="A", extra={"BodyPartExamined": "HEAD"})
    write_series(tmp_path / "x", n=2, patient="B", extra={"BodyPartExamined": "CHEST"}, seed=9)
    result = pipeline.run(config([tmp_path / "x"], label_tag="BodyPartExamined"))
    assert result["classes"] == {"CHEST": 2, "HEAD": 2}


def test_files_in_root_form_one_class(tmp_path, config, caplog):
    write_series(tmp_path / "scans", n=2)
    result = pipeline.run(config([tmp_path / "scans"]))
    assert result["classes"] == {"scans": 2}
    assert "one class named after the folder" in caplog.text
