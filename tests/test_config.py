"""Config precedence: defaults < YAML files < --set < explicit CLI values; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from medcondense.config import (
    DistillConfig,
    EvaluateConfig,
    IngestConfig,
    build_config,
    default_data_path,
    default_syn_name,
)
from medcondense.errors import ConfigError


def test_defaults() -> None:
    cfg = build_config(DistillConfig)
    # batch_real None = the preset's value (256, the reference's, under --preset paper)
    assert (cfg.method, cfg.ipc, cfg.lr_net, cfg.batch_real, cfg.preset) == ("dsa", 10, 0.01, None, "quick")


def test_precedence(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("distill: {ipc: 1, method: dc, batch_real: 64}\n")
    b.write_text("distill: {ipc: 50}\n")
    cfg = build_config(DistillConfig, config_files=[a, b], set_options=["distill.method=dm"], batch_real=None)
    assert (cfg.ipc, cfg.method, cfg.batch_real) == (50, "dm", 64)
    cfg = build_config(DistillConfig, config_files=[a], set_options=["distill.ipc=10"], ipc=20)
    assert cfg.ipc == 20


def test_set_values_are_typed() -> None:
    cfg = build_config(IngestConfig, set_options=["ingest.split=0.8,0.1,0.1", "ingest.hash_paths=true", "ingest.size=32"])
    assert cfg.split == (0.8, 0.1, 0.1) and cfg.hash_paths is True and cfg.size == 32
    cfg = build_config(EvaluateConfig, set_options=["evaluate.baselines=[full]"])
    assert cfg.baselines == ["full"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["distill.ipcc=10"], "unknown option distill.ipcc"),
        (["distill.ipc=ten"], "cannot use 'ten'"),
        (["ipc=10"], "stage.key=value"),
        (["train.ipc=10"], "unknown stage"),
    ],
)
def test_bad_set_options(sets, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(DistillConfig, set_options=sets)


def test_bad_yaml_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        build_config(DistillConfig, config_files=[bad])
    assert str(bad) in str(info.value)
    other = tmp_path / "other.yaml"
    other.write_text("training: {ipc: 1}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        build_config(DistillConfig, config_files=[other])
    with pytest.raises(ConfigError, match="cannot read"):
        build_config(DistillConfig, config_files=[tmp_path / "absent.yaml"])


def test_workdir_defaults(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEDCONDENSE_WORKDIR", raising=False)
    assert default_data_path() == Path("data.h5")
    monkeypatch.setenv("MEDCONDENSE_WORKDIR", str(tmp_path))
    assert default_data_path() == tmp_path / "data.h5"
    assert default_data_path("/x") == Path("/x/data.h5")
    assert default_syn_name("dsa", 10) == "syn_dsa_ipc10.h5"
