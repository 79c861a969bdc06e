"""Fixtures for the reliability tests: a nearly full file system, a small real NIfTI cohort."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from rel_helpers import nifti_cohort


@pytest.fixture(autouse=True)
def _salt(monkeypatch):
    """A fixed site secret; no salt file is written into the real home folder."""
    monkeypatch.setenv("MEDCONDENSE_SALT", "test-secret")



@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """Two class folders x 2 patients of 12x12x3 NIfTI volumes (never modified by a test)."""
    return nifti_cohort(tmp_path_factory.mktemp("cohort") / "cohort")


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 512 KiB tmpfs filled to its last few KiB (needs root; skipped otherwise, with the reason)."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk tests mount a small tmpfs, which needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - 8192))  # a few KiB stay free
        os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
