"""SIGINT and SIGTERM as one clean stop, and stretches of code that must not be cut in half.

The CLI calls :func:`install` once per stage: from then on SIGTERM behaves like Ctrl-C (both
raise :class:`Terminated`/:class:`KeyboardInterrupt` in the main thread, both end in exit 130),
so a ``kill`` from a scheduler gets the same clean-up as Ctrl-C (checkpoint, no temporary left).

Some stretches must not be interrupted half-way: a library call that swallows exceptions raised
inside it (h5py prints "Exception ignored ... KeyboardInterrupt" and carries on), or the fsync +
rename that publishes an output. Inside :func:`deferred` a signal is only recorded; it is raised
at the next :func:`check` (call it between chunks of work) or when the outermost ``deferred``
block ends.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``except KeyboardInterrupt`` clean-up runs."""


_state: dict[str, Any] = {"depth": 0, "pending": None, "installed": False, "main_pid": None, "final": set(), "held": False}


def _raise_for(signum: int) -> None:
    if signum == signal.SIGTERM:
        raise Terminated("terminated (SIGTERM)")
    raise KeyboardInterrupt


def _handler(signum: int, frame: Any) -> None:
    """Raise now, or record the signal while a :func:`deferred` block runs."""
    if _state["main_pid"] is not None and os.getpid() != _state["main_pid"]:
        # a forked worker inherited this handler: stop quietly, the parent does the clean-up
        os._exit(128 + signum)
    if _state["depth"] > 0 and _state["pending"] is None:
        _state["pending"] = signum
        log.warning("stopping after the current write completes (signal again to stop at once)")
        return
    _state["pending"] = None  # a second signal while deferred: stop at once
    _raise_for(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through :func:`_handler` (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    _state["installed"] = True
    _state["main_pid"] = os.getpid()


@contextmanager
def installed() -> Iterator[None]:
    """:func:`install` for the length of a block, then the previous handlers again (so a stage
    run in-process, e.g. by tests, leaves the host's signal handling as it was)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    install()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
        _state["installed"] = False


def mark_final(path: str | Path | None) -> None:
    """Declare ``path`` the stage's final output (see :func:`publishing`)."""
    _state["final"] = set() if path is None else {str(Path(path).absolute())}
    _state["held"] = False
    _state["pending"] = None
    _state["depth"] = 0


def hold() -> None:
    """Record signals from now to :func:`finish` (the stage's work is complete)."""
    _state["depth"] += 1
    _state["held"] = True


def finish() -> int | None:
    """End of a stage: release a held deferral and return the signal that arrived meanwhile."""
    signum = _state["pending"]
    _state.update(depth=0, pending=None, held=False, final=set())
    return signum


@contextmanager
def publishing(path: str | Path) -> Iterator[None]:
    """Around the fsync + rename that publishes ``path``: signals are recorded, not raised.

    For an ordinary file the recorded signal is raised when the block ends (the file is
    complete, the stage stops). For the stage's final output (:func:`mark_final`) the deferral
    lasts to the end of the stage: once the final output is published the stage finishes its
    short tail and exits with its normal code, so exit 130 always means "output unchanged".
    """
    if str(Path(path).absolute()) in _state["final"] and not _state["held"]:
        _state["held"] = True
        _state["depth"] += 1  # released by finish()
        yield
        return
    with deferred():
        yield


def worker_init() -> None:
    """For worker processes: die on SIGTERM and ignore SIGINT (the parent decides and stops them)."""
    _state["main_pid"] = None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to this worker when its parent dies, however it dies
    (even SIGKILL), so no worker outlives the run."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os._exit(128 + int(signal.SIGTERM))


def pending() -> int | None:
    """The signal recorded inside a :func:`deferred` block, if any."""
    return _state["pending"]


def check() -> None:
    """Raise the recorded signal now (call between chunks of work inside :func:`deferred`)."""
    signum = _state["pending"]
    if signum is not None:
        _state["pending"] = None
        _raise_for(signum)


@contextmanager
def deferred() -> Iterator[None]:
    """Record SIGINT/SIGTERM instead of raising them; raise the recorded one when the block ends.

    Without :func:`install` (library use) this only delays Python's own Ctrl-C handling as far
    as Python allows; the CLI always installs.
    """
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if _state["depth"] == 0:
        check()
