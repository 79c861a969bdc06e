"""``ingest --protocol``: two real sites that ingest with one protocol merge; without it, a
different size or window is refused naming the setting; contradicting options are exit 2."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from site_helpers import SIZE, ingest
from typer.testing import CliRunner

from medcondense import store
from medcondense.cli import app
from medcondense.errors import ConfigError
from medcondense.ingest import protocol as proto

runner = CliRunner()

SHAPING = ("size", "spacing", "window", "percentiles", "normalization", "channels", "axis", "slices")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_two_sites_with_one_protocol_merge(site_a: Path, site_b: Path, tmp_path: Path) -> None:
    a, b = store.read(site_a), store.read(site_b)
    for key in SHAPING:
        assert a.attrs["preprocessing"][key] == b.attrs["preprocessing"][key], key
    assert b.attrs["preprocessing"]["protocol"]["content_hash"] == a.attrs["content_hash"]
    assert a.class_names == b.class_names and a.image_shape == b.image_shape == (1, SIZE, SIZE)
    assert not np.allclose(a.images.mean(), b.images.mean(), atol=1e-3)  # really another "scanner"
    result = invoke("merge", site_a, site_b, "-o", tmp_path / "ab.h5", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "real" and summary["sites"] == {"colin27": a.n, "shifted": b.n}
    merged = store.read(tmp_path / "ab.h5", verify_hash=True)
    assert merged.n == a.n + b.n and merged.attrs["sites"] == ["colin27", "shifted"]
    assert merged.attrs.get("parts")[0]["content_hash"] == a.attrs["content_hash"]


def test_protocol_yaml_from_export_equals_the_set(site_a: Path, site_b: Path, site_trees, tmp_path: Path) -> None:
    result = invoke("export", site_a, "--format", "protocol", "-o", tmp_path / "exp")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "exp" / "protocol" / "protocol.yaml").read_text()
    data = yaml.safe_load(text)
    assert data["format"] == proto.FORMAT and data["settings"]["window"] == "percentile"
    assert data["settings"]["size"] == SIZE and data["class_names"] == store.read(site_a).class_names
    assert "patient" not in text and "source_path" not in text
    out = tmp_path / "b_yaml.h5"
    ingest(site_trees["colin27_shifted"], out, "shifted", protocol=str(tmp_path / "exp" / "protocol" / "protocol.yaml"))
    # the same protocol from a YAML or from the set: the same file content
    assert store.read_attrs(out)["content_hash"] == store.read_attrs(site_b)["content_hash"]


@pytest.mark.parametrize("option", [["--size", "24"], ["--size", "64"], ["--window", "40/400"], ["--normalize", "zscore"]])
def test_contradicting_option_is_exit_2_naming_it(option, site_a: Path, site_trees, tmp_path: Path) -> None:
    # --size 64 is the default value, given explicitly: still a contradiction
    manifest = site_trees["colin27_shifted"]
    out = tmp_path / "b.h5"
    result = invoke("ingest", manifest.parent, "--labels", manifest, "--protocol", site_a, *option, "-o", out)
    assert result.exit_code == 2, result.output
    assert f"{option[0]} " in result.output and "contradicts the protocol" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_python_api_refuses_a_contradiction(site_a: Path, site_trees, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--size 24 contradicts"):
        ingest(site_trees["colin27_shifted"], tmp_path / "b.h5", "b", size=24, protocol=str(site_a))


@pytest.mark.parametrize("option, setting", [({"size": 24}, "size"), ({"size": SIZE, "window": "40/400"}, "window")])
def test_without_protocol_merge_refuses_naming_the_setting(option, setting, site_a, site_trees, tmp_path) -> None:
    other = tmp_path / "other.h5"
    ingest(site_trees["colin27_shifted"], other, "shifted", **option)
    result = invoke("merge", site_a, other, "-o", tmp_path / "m.h5")
    assert result.exit_code == 2, result.output
    assert f"{setting} (--{setting})" in result.output and "--protocol" in result.output
    assert not (tmp_path / "m.h5").exists()


def test_protocol_class_order_and_a_class_absent_at_a_site(site_a, site_trees, tmp_path, caplog) -> None:
    a = store.read(site_a)
    protocol = proto.from_attrs({**store.read_attrs(site_a), "class_names": a.class_names[::-1]}).to_dict()
    path = tmp_path / "reversed.yaml"
    path.write_text(yaml.safe_dump(protocol))
    out = tmp_path / "b.h5"
    with caplog.at_level(logging.WARNING, logger="medcondense"):
        ingest(site_trees["shifted_no_cerebellum"], out, "shifted", protocol=str(path))
    b = store.read(out)
    assert b.class_names == a.class_names[::-1]  # the protocol's order, not sorted
    assert "cerebellum" in b.class_names and not (b.labels == b.class_names.index("cerebellum")).any()
    assert any("'cerebellum' has no train images" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medcondense"):
        result = invoke("merge", site_a, out, "-o", tmp_path / "m.h5", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["absent"] == {"cerebellum": ["shifted"]}
    merged = store.read(tmp_path / "m.h5")
    assert merged.class_names == a.class_names  # the first part's order
    from_b = merged.meta["site"] == "shifted"
    # every image of b keeps its class *name* through the merge
    names_in_merged = [merged.class_names[i] for i in merged.labels[from_b]]
    assert names_in_merged == [b.class_names[i] for i in b.labels]
    assert np.array_equal(merged.images[from_b], b.images)


def test_a_label_outside_the_protocol_is_exit_2(site_a, site_trees, tmp_path) -> None:
    attrs = store.read_attrs(site_a)
    protocol = proto.from_attrs({**attrs, "class_names": [c for c in attrs["class_names"] if c != "temporal"]})
    path = tmp_path / "p.yaml"
    path.write_text(proto.to_yaml(protocol))
    manifest = site_trees["colin27_shifted"]
    result = invoke("ingest", manifest.parent, "--labels", manifest, "--protocol", path, "-o", tmp_path / "b.h5")
    assert result.exit_code == 2 and "'temporal' are not in the protocol" in result.output


def test_zscore_constants_are_pinned(site_trees, tmp_path) -> None:
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    ingest(site_trees["colin27"], a, "colin27", size=SIZE, window="percentile", normalize="zscore")
    ingest(site_trees["colin27_shifted"], b, "shifted", protocol=str(a))
    na, nb = store.read_attrs(a)["normalization"], store.read_attrs(b)["normalization"]
    assert nb["method"] == "zscore" and nb["params"] == na["params"]
    assert nb["train_mean"] != na["train_mean"]  # its own data, the source's constants


def test_window_rules_auto_and_voi() -> None:
    assert proto.window_rule({"window": "auto", "windows_used": {"percentile": 40}}) == "percentile"
    assert proto.window_rule({"window": "auto", "windows_used": {"abdomen": 5}}) == "abdomen"
    assert proto.window_rule({"window": "none (for --normalize ct)"}) == "none"
    with pytest.raises(ConfigError, match="each file's own VOI"):
        proto.window_rule({"window": "auto", "windows_used": {"voi": 5}})
    with pytest.raises(ConfigError, match="several windows"):
        proto.window_rule({"window": "auto", "windows_used": {"voi": 5, "abdomen": 2}})
    assert proto.same_window("brain", "40/80") and not proto.same_window("brain", "40/400")


def test_bad_protocol_files_are_exit_2(site_trees, tmp_path) -> None:
    manifest = site_trees["colin27"]
    bad = tmp_path / "bad.yaml"
    for text, reason in (("a: [", "not a protocol YAML"), ("format: other/1", "not a medcondense protocol"),
                         (f"format: {proto.FORMAT}\nsettings: {{size: 8}}\nclass_names: [a]", "missing setting")):
        bad.write_text(text)
        result = invoke("ingest", manifest.parent, "--labels", manifest, "--protocol", bad, "-o", tmp_path / "x.h5")
        assert result.exit_code == 2 and reason in result.output, result.output
    result = invoke("ingest", manifest.parent, "--protocol", tmp_path / "nope.yaml", "-o", tmp_path / "x.h5")
    assert result.exit_code == 2 and "protocol file not found" in result.output
