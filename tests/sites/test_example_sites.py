"""examples/sites.py: the simulated scanner, distinct patches per site, the missing extra's error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from medcondense import store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sites.py"


def test_scanner_shift_is_deterministic_and_changes_contrast(sites_example) -> None:
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 100, size=(12, 14, 10)).astype(np.float32)
    one = sites_example.scanner_shift(volume, np.eye(4), seed=3)
    assert np.array_equal(one, sites_example.scanner_shift(volume, np.eye(4), seed=3))
    assert not np.array_equal(one, sites_example.scanner_shift(volume, np.eye(4), seed=4))
    assert one.shape == volume.shape and one.dtype == np.float32
    assert 0.9 < np.corrcoef(one.ravel(), volume.ravel())[0, 1] < 0.999  # same anatomy, another scanner


def test_sites_have_their_own_patches_and_site_names(site_a: Path, site_b: Path) -> None:
    a, b = store.read(site_a), store.read(site_b)
    assert set(a.meta["site"]) == {"colin27"} and set(b.meta["site"]) == {"shifted"}
    assert a.attrs["sites"] == ["colin27"]
    assert not np.allclose(a.images, b.images)  # other patch centres, another scanner


def test_missing_nilearn_names_the_extra(tmp_path: Path) -> None:
    code = ("import runpy, sys; sys.modules['nilearn'] = None; "
            f"sys.argv = ['sites.py', '--out', {str(tmp_path)!r}, '--sites', 'icbm152,colin27']; "
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "pip install nilearn" in result.stderr and "medcondense[examples]" in result.stderr
    assert "Traceback" not in result.stderr
