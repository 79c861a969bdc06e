"""Domain exceptions and the exit codes they map to.

Every error a user can cause derives from :class:`MedcondenseError`; the CLI turns it into one
line on stderr (``error: <file>: <reason>``) and the matching exit code. Nothing else should
reach the user as a traceback.

Exit codes (README.md and docs/cli.md carry the same table):

====  =====================================================================
0     success
1     runtime failure (e.g. CUDA out of memory, NaN loss)
2     usage or configuration error (Click's own convention)
3     no usable input (no readable DICOM/NIfTI, a file that is not ours; too few
      units for score's membership audit)
4     partial: some inputs were rejected (see the rejects report)
5     a gate failed (``score --fail-on-copies``, ``--max-mia-auc``, ``--max-mia-tpr``)
130   interrupted (a checkpoint is kept where the stage has one)
====  =====================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_NO_INPUT = 3
EXIT_PARTIAL = 4
EXIT_GATE = 5
EXIT_INTERRUPTED = 130


class MedcondenseError(Exception):
    """Base class: a message for the user, an optional file it concerns, an exit code."""

    exit_code: int = EXIT_RUNTIME

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ConfigError(MedcondenseError):
    """A bad option, option value or configuration file."""

    exit_code = EXIT_USAGE


class NoUsableInputError(MedcondenseError):
    """Nothing we can read: an empty folder, no DICOM/NIfTI, an unreadable file."""

    exit_code = EXIT_NO_INPUT


class StoreError(NoUsableInputError):
    """An HDF5 file that is not ours, of a newer schema, or inconsistent."""


class DataMismatchError(MedcondenseError):
    """Two inputs that cannot be used together (image sizes, channels, class names)."""

    exit_code = EXIT_USAGE


class ShapeMismatch(DataMismatchError):
    """An array with another shape than expected; carries both (kornia-style)."""

    def __init__(self, what: str, expected: Any, got: Any, *, path: str | Path | None = None):
        super().__init__(f"{what}: expected shape {expected}, got {got}", path=path)
        self.expected = expected
        self.got = got


class PartialInputError(MedcondenseError):
    """Some inputs were rejected; the output was written without them."""

    exit_code = EXIT_PARTIAL


class GateFailed(MedcondenseError):
    """A quality or privacy gate failed (e.g. near-copies with ``--fail-on-copies``)."""

    exit_code = EXIT_GATE


class RuntimeFailure(MedcondenseError):
    """A failure at run time: NaN loss, CUDA out of memory, a codec crash."""

    exit_code = EXIT_RUNTIME


class Interrupted(MedcondenseError):
    """Ctrl-C: the stage stopped cleanly (and kept its checkpoint where it has one)."""

    exit_code = EXIT_INTERRUPTED


class AlreadyDone(Exception):
    """Not an error: the output exists and was made from identical inputs and options."""

    def __init__(self, path: str | Path, result: dict | None = None):
        super().__init__(str(path))
        self.path = str(path)
        self.result = result or {}
