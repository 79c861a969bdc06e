"""Two real sites for the multi-site tests: Colin27 (shipped) and a simulated scanner-shift site
made from it by examples/sites.py, cut small (10 classes x 3/1/2 patches) and written as NIfTI.

The second real brain (ICBM152 from the nilearn wheel) is used only by the example and the
benchmark, as the issue asks; the tests need nothing beyond the shipped data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from site_helpers import PER_CLASS, SIZE, ingest


@pytest.fixture(scope="session", autouse=True)
def _salt():
    """One fixed site secret for the session (both sites on one machine share it, which is
    exactly the case where unprefixed patient keys would collide after a merge)."""
    old = os.environ.get("MEDCONDENSE_SALT")
    os.environ["MEDCONDENSE_SALT"] = "sites-test-secret"
    yield
    if old is None:
        os.environ.pop("MEDCONDENSE_SALT", None)
    else:
        os.environ["MEDCONDENSE_SALT"] = old



@pytest.fixture(scope="session")
def sites_example():
    import sys

    examples = Path(__file__).resolve().parents[2] / "examples"
    sys.path.insert(0, str(examples))
    try:
        import sites as module  # examples/sites.py
    finally:
        sys.path.remove(str(examples))
    return module


@pytest.fixture(scope="session")
def site_trees(sites_example, tmp_path_factory) -> dict[str, Path]:
    """site name -> its NIfTI manifest (colin27, colin27_shifted, and colin27 without cerebellum)."""
    root = tmp_path_factory.mktemp("sites")
    trees = {
        name: sites_example.build_site(name, root / name, seed=0, **PER_CLASS)
        for name in ("colin27", "colin27_shifted")
    }
    trees["shifted_no_cerebellum"] = sites_example.build_site(
        "colin27_shifted", root / "shifted_no_cerebellum", seed=0, drop_classes=("cerebellum",), **PER_CLASS)
    return trees


@pytest.fixture(scope="session")
def site_a(site_trees, tmp_path_factory) -> Path:
    """Colin27, ingested with explicit settings: the protocol's source."""
    out = tmp_path_factory.mktemp("a") / "a.h5"
    ingest(site_trees["colin27"], out, "colin27", size=SIZE, window="percentile")
    return out


@pytest.fixture(scope="session")
def site_b(site_trees, site_a, tmp_path_factory) -> Path:
    """The shifted site, ingested with ``protocol = a.h5``."""
    out = tmp_path_factory.mktemp("b") / "b.h5"
    ingest(site_trees["colin27_shifted"], out, "shifted", protocol=str(site_a))
    return out
