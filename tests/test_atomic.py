"""Write-then-rename: a failed write leaves neither a temp file nor a changed target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medcondense.atomic import atomic_path, tmp_path_for, write_json


def test_success_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert not tmp_path_for(target).exists()


def test_failure_keeps_the_old_content_and_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert not tmp_path_for(target).exists()


def test_non_json_values_are_written_as_text(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"path": tmp_path})
    assert json.loads((tmp_path / "x.json").read_text()) == {"path": str(tmp_path)}
