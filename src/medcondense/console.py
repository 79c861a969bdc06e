"""Logging and progress: results go to stdout, everything else to stderr.

Progress bars appear only when stderr is a terminal and the user did not ask for ``-q``, so
shell scripts and CI logs stay clean. Use ``logging.getLogger(__name__)`` in modules, never print.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Iterator

LOGGER_NAME = "medcondense"
_state = {"quiet": False}


def setup_logging(verbosity: int = 0, quiet: bool = False, prefix: str = "") -> None:
    """Configure the ``medcondense`` logger: WARNING with ``-q``, INFO by default, DEBUG with ``-v``.

    ``prefix`` starts every line (``[rank r] `` for torchrun ranks other than 0).
    """
    _state["quiet"] = quiet
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity > 0 else logging.INFO)
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=Console(stderr=True), show_time=False, show_path=False, markup=False
        )
        handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + "%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def progress_enabled() -> bool:
    """True when a progress bar should be drawn (stderr is a TTY and not ``-q``)."""
    return sys.stderr.isatty() and not _state["quiet"]


class _Task:
    """What ``progress()`` yields: call ``advance(n)`` and ``update(**fields)``; a no-op off a TTY."""

    def __init__(self, bar=None, task_id=None):
        self._bar, self._id = bar, task_id

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._id, n)

    def update(self, **fields) -> None:
        if self._bar is not None:
            self._bar.update(self._id, **fields)


@contextmanager
def progress(description: str, total: int | None) -> Iterator[_Task]:
    """A rich progress bar on stderr when :func:`progress_enabled`, otherwise a silent stand-in.

    ``update(status="loss 0.12")`` sets the text shown after the bar.
    """
    if not progress_enabled():
        yield _Task()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        yield _Task(bar, bar.add_task(description, total=total, status=""))


def stdout_console():
    """A rich Console on stdout for result tables (no colour codes when stdout is not a TTY)."""
    from rich.console import Console

    return Console(file=sys.stdout, soft_wrap=True)
