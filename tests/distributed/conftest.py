"""The torchrun tests' launches start with the package's first test, so the in-process tests of
test_distributed_unit.py run while the torchrun processes do (the machine has few cores and the
launches are mostly waiting on torch imports)."""

from __future__ import annotations

import pytest

from torchrun_launches import Launches

TORCHRUN_MODULE = "test_torchrun.py"


@pytest.fixture(scope="package")
def launches(tmp_path_factory) -> Launches:
    started = Launches(tmp_path_factory.mktemp("torchrun"))
    yield started
    started.close()


@pytest.fixture(scope="package", autouse=True)
def _launch_early(request) -> None:
    """Start the launches now when any test of test_torchrun.py is selected (not otherwise)."""
    if any(item.path.name == TORCHRUN_MODULE for item in request.session.items):
        request.getfixturevalue("launches")
