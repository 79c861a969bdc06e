"""Run code in a fresh interpreter and see what it imported (imported as ``fresh_interpreter``).

Shared by the tests that pin lazy imports (the CLI's, and ingest's light path); kept out of
conftest.py for the reason given in blob_data.py.
"""

from __future__ import annotations

import subprocess
import sys


def modules_loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    probe = code + f"\nimport sys\nprint('loaded:' + ','.join(m for m in {modules!r} if m in sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = result.stdout.splitlines()[-1]  # after whatever ``code`` printed
    assert report.startswith("loaded:"), result.stdout
    return [m for m in report.removeprefix("loaded:").split(",") if m]
