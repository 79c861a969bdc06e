"""Safe writes: private O_EXCL temporaries, fsync + rename, clean-up on every failure, locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medcondense import interrupts
from medcondense.atomic import atomic_dir, atomic_path, output_lock, temporaries_for, write_json
from medcondense.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src"


def test_success_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert not temporaries_for(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]  # no lock file left


def test_failure_keeps_the_old_content_and_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            assert temporaries_for(target) == [tmp]
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert not temporaries_for(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_non_json_values_are_written_as_text(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"path": tmp_path})
    assert json.loads((tmp_path / "x.json").read_text()) == {"path": str(tmp_path)}


def test_the_temporary_is_private_unpredictable_and_gets_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    names = []
    for _ in range(2):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.h5.") and tmp.name.endswith(".tmp")
            assert tmp.is_file() and not tmp.is_symlink()
            names.append(tmp.name)
            tmp.write_text("x")
    assert names[0] != names[1]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_symlink_planted_at_the_old_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "report.json"
    (tmp_path / "report.json.tmp").symlink_to(victim)
    write_json(target, {"a": 1})
    assert victim.read_text() == "precious"
    assert json.loads(target.read_text()) == {"a": 1}


def test_a_symlink_at_the_lock_name_is_refused_and_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "report.json"
    (tmp_path / "report.json.lock").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_json(target, {"a": 1})
    assert victim.read_text() == "precious" and not target.exists()


def test_a_second_writer_is_refused_while_the_lock_is_held_and_the_lock_is_reentrant(tmp_path: Path) -> None:
    target = tmp_path / "data.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom medcondense.atomic import output_lock\n"
         f"with output_lock({str(target)!r}):\n    print('locked', flush=True)\n    time.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"another medcondense is writing {target}"):
            with output_lock(target):
                pass
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel releases the flock
        holder.wait()
    with output_lock(target):  # free again although the killed holder left its lock file
        with output_lock(target):
            write_json(target, {"ok": True})
    assert json.loads(target.read_text()) == {"ok": True}


def test_concurrent_writers_take_turns_and_leave_one_complete_output(tmp_path: Path) -> None:
    target = tmp_path / "shared.json"
    script = (
        "import sys\nfrom medcondense.atomic import write_json\n"
        "for i in range(30):\n"
        f"    write_json({str(target)!r}, {{'writer': sys.argv[1], 'i': i, 'pad': 'x' * 200000}})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen([sys.executable, "-c", script, name], env=env) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    data = json.loads(target.read_text())
    assert data["i"] == 29 and data["writer"] in ("a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.json"]


def test_sigterm_during_a_write_leaves_no_temporary_and_the_old_output(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    script = (
        "import time\nfrom medcondense import interrupts\nfrom medcondense.atomic import atomic_path\n"
        "interrupts.install()\n"
        "try:\n"
        f"    with atomic_path({str(target)!r}) as tmp:\n"
        "        tmp.write_text('half')\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(120)\n"
        "except interrupts.Terminated:\n"
        "    raise SystemExit(130)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def _signal_during_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deliver SIGINT in the middle of publishing (just before the rename)."""
    real_replace = os.replace

    def replace(src, dst):
        monkeypatch.setattr(os, "replace", real_replace)  # once
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here: it may only record the signal
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_signal_while_publishing_a_file_stops_after_the_file_is_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ckpt.json"
    target.write_text("old")
    _signal_during_rename(monkeypatch)
    with interrupts.installed(), pytest.raises(KeyboardInterrupt):
        interrupts.mark_final(None)
        with atomic_path(target) as tmp:
            tmp.write_text("complete")
    assert target.read_text() == "complete"
    assert not temporaries_for(target)


def test_a_signal_while_publishing_the_final_output_lets_the_stage_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "data.h5"
    _signal_during_rename(monkeypatch)
    with interrupts.installed():
        interrupts.mark_final(target)
        with atomic_path(target) as tmp:
            tmp.write_text("complete")
        write_json(tmp_path / "tail.json", {"after": True})  # the stage's short tail still runs
        assert interrupts.finish() == signal.SIGINT  # the CLI warns and exits with the stage's code
    assert target.read_text() == "complete" and (tmp_path / "tail.json").exists()


def test_atomic_dir_replaces_a_folder_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out, replace=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("exporter failed")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with pytest.raises(ConfigError):
        with atomic_dir(out, replace=False) as tmp:
            (tmp / "new.txt").write_text("new")
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
