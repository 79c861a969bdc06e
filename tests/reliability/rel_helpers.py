"""Helpers for the reliability tests: real inputs, the CLI in a subprocess, clean-failure checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[2] / "src"


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout's source first, a fixed site secret."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["MEDCONDENSE_SALT"] = "test-secret"
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "medcondense", *[str(a) for a in args]]


def run_cli(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``medcondense ARGS`` in a fresh interpreter; stdout/stderr captured as text."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=cli_env(), cwd=cwd)


def write_nifti(path: Path, volume: np.ndarray) -> Path:
    """A real NIfTI-1 file (1 mm voxels) holding ``volume``."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.eye(4)), str(path))
    return path


def nifti_cohort(root: Path, classes: tuple[str, ...] = ("a", "b"), patients: int = 2, slices: int = 3, size: int = 12) -> Path:
    """Class folders of small NIfTI volumes, one file per patient (``<class>/p<k>.nii.gz``)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        for p in range(patients):
            vol = rng.random((size, size, slices)).astype(np.float32) * 100 + 50 * c
            write_nifti(root / name / f"p{c}{p}.nii.gz", vol)
    return root


def leftovers(folder: Path) -> list[str]:
    """Temporaries and lock files anywhere under ``folder`` (what a clean stop never leaves)."""
    found = []
    for path in Path(folder).rglob("*"):
        name = path.name
        if path.is_symlink():
            continue  # links planted by a test; medcondense's temporaries are never links
        if name.endswith(".tmp") or name.endswith(".lock") or ".tmp-" in name or ".old-" in name:
            found.append(str(path))
    return sorted(found)


def one_clean_line(stderr: str, *needles: str) -> str:
    """The stderr's ``error:``/``interrupted``/``terminated`` line; no traceback, no crash text."""
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert "a bug in medcondense" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith(("error:", "interrupted", "terminated"))]
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], (needle, stderr)
    return lines[0]
