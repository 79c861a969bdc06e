"""Safe writes: a private temporary beside the target, fsync, atomic rename, a lock per output.

Every output of medcondense (HDF5 sets, checkpoints, reports, caches, plots, export folders)
goes through here, so that under any failure an output is either the complete new one or the
previous one, and nothing else is left behind:

* The temporary is ``.<name>.<random>.tmp`` in the target's folder, created with ``O_EXCL``
  (:func:`tempfile.mkstemp` / :func:`tempfile.mkdtemp`), so a symlink planted at any name can
  neither be followed nor predicted, and two writers never share one temporary.
* The file (or every file of a folder) and then the folder are fsync'ed around the rename, so
  after a power cut the output is the old one or the new one.
* The temporary is removed on every failure path: exceptions, Ctrl-C, SIGTERM (see
  :mod:`medcondense.interrupts`). A full disk (ENOSPC, EDQUOT) becomes
  :class:`~medcondense.errors.RuntimeFailure` "no space left on <folder>" (exit 1).
* ``<output>.lock`` is held with :func:`fcntl.flock` while an output is written (by the CLI for
  a whole stage, see :func:`output_lock`); the kernel releases it when the process dies, so a
  crashed run never blocks the next one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from medcondense import interrupts
from medcondense.errors import ConfigError, RuntimeFailure

TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("no space left", "disk quota exceeded", "errno = 28", "errno = 122")

#: locks this process holds: path -> [fd, depth]; flock is per open file, so re-entry must
#: reuse the descriptor instead of locking the same file twice (which would block on itself)
_held: dict[str, list[int]] = {}


def temp_prefix(path: str | Path) -> str:
    """The prefix of every temporary written for ``path`` (``.<name>.``)."""
    return f".{Path(path).name}."


def temporaries_for(path: str | Path) -> list[Path]:
    """The temporaries for ``path`` that exist now (left by a killed process, or in use)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefix = temp_prefix(path)
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(TMP_SUFFIX))


def tmp_path_for(path: str | Path) -> Path:
    """The old predictable temporary name ``<path>.tmp``; nothing writes it any more.

    Kept so that checks written against it still import; :func:`temporaries_for` lists the
    temporaries that really exist.
    """
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


# --------------------------------------------------------------------------- errors


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or quota) is full, however the library phrased it."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    text = str(exc).lower()
    return any(part in text for part in _NO_SPACE_TEXT)


def no_space(folder: str | Path) -> RuntimeFailure:
    return RuntimeFailure(f"no space left on {folder}", hint="free some space or write elsewhere with -o")


def check_free_space(folder: str | Path, needed_bytes: int) -> None:
    """Fail early with "no space left" when ``folder`` has less than ``needed_bytes`` free."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell (an exotic file system): let the write itself find out
    if needed_bytes > free:
        raise RuntimeFailure(
            f"no space left on {folder}: about {_mb(needed_bytes)} needed, {_mb(free)} free",
            hint="free some space or write elsewhere with -o",
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _disk_nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 64 * 1024
    except OSError:
        return False


# --------------------------------------------------------------------------- durability


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # e.g. a pipe-like fs
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(folder) / name)
        _fsync_path(Path(folder), directory=True)


def _default_mode(directory: bool) -> int:
    """What a plain open()/mkdir() would give under the current umask (mkstemp uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


# --------------------------------------------------------------------------- locking


@contextmanager
def output_lock(path: str | Path, *, wait: bool = False) -> Iterator[None]:
    """Hold ``<path>.lock`` (``fcntl.flock``) while ``path`` is being made.

    ``wait=False`` (the CLI, around a whole stage): a second writer fails at once with
    :class:`~medcondense.errors.ConfigError` "another medcondense is writing <path>" (exit 2).
    ``wait=True`` (every :func:`atomic_path`): writers take turns, each output complete.
    Re-entrant within a process. The lock file is removed on release; the inode check after
    locking makes that safe against a writer that opened the old file just before.
    """
    path = Path(path)
    key = str(path.absolute())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    lock = path.with_name(path.name + LOCK_SUFFIX)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, path, wait)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        try:
            lock.unlink()
        except OSError:
            pass
        os.close(fd)  # closing releases the flock


def _acquire(lock: Path, path: Path, wait: bool) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError("is a symbolic link; refusing to use it as a lock file", path=lock) from None
            if exc.errno in _NO_SPACE:
                raise no_space(lock.parent) from None
            raise ConfigError(f"cannot create the lock file ({exc.strerror})", path=lock) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another medcondense is writing {path}", hint="wait for it to finish, or write elsewhere with -o") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.lstat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as we opened it: lock the new one


# --------------------------------------------------------------------------- files


@contextmanager
def atomic_path(path: str | Path, *, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a private temporary path to write; on success it replaces ``path``.

    The temporary (``.<name>.<random>.tmp`` beside ``path``) exists, empty, when yielded; write
    it with any library. On any error, Ctrl-C or SIGTERM it is removed and an existing ``path``
    stays untouched. A full disk raises "no space left on <folder>". ``expected_bytes`` (when
    the size is known) checks free space before anything is written. The parent folder is
    created when missing. ``<path>.lock`` is held (waiting for another writer) meanwhile.
    """
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise no_space(folder) from None
        raise
    if expected_bytes:
        check_free_space(folder, expected_bytes)
    with output_lock(path, wait=True):
        try:
            fd, name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TMP_SUFFIX, dir=folder)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise no_space(folder) from None
            raise
        os.close(fd)
        tmp = Path(name)
        try:
            os.chmod(tmp, _default_mode(directory=False))
            yield tmp
            with interrupts.publishing(path):  # publishing is never cut in half
                _fsync_path(tmp)
                os.replace(tmp, path)
                _fsync_path(folder, directory=True)
        except BaseException as exc:
            full = isinstance(exc, Exception) and (is_no_space(exc) or _disk_nearly_full(folder))
            _remove(tmp)
            if full:
                raise no_space(folder) from None
            raise


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a private temporary folder to fill; on success it becomes ``path``.

    The folder ``.<name>.<random>.tmp`` is made with :func:`tempfile.mkdtemp` beside ``path``.
    An existing ``path`` is replaced only with ``replace=True`` (else ConfigError), and only
    when the new folder is complete: the old one is renamed aside, the new one renamed in, the
    old one removed; a failure in between puts the old one back.
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    with output_lock(path, wait=True):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=TMP_SUFFIX, dir=folder))
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise no_space(folder) from None
            raise
        old: Path | None = None
        try:
            os.chmod(tmp, _default_mode(directory=True))
            yield tmp
            with interrupts.publishing(path):
                _fsync_tree(tmp)
                if path.is_symlink() or path.exists():
                    if not replace and not (path.is_dir() and not path.is_symlink() and not any(path.iterdir())):
                        raise ConfigError("output folder appeared while writing; not replacing it", path=path)
                    old = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".old" + TMP_SUFFIX, dir=folder))
                    os.rmdir(old)
                    os.rename(path, old)
                os.rename(tmp, path)
                _fsync_path(folder, directory=True)
        except BaseException as exc:
            full = isinstance(exc, Exception) and (is_no_space(exc) or _disk_nearly_full(folder))
            _remove(tmp)
            if old is not None and not path.exists() and not path.is_symlink():
                os.rename(old, path)  # put the previous output back
                old = None
            if full:
                raise no_space(folder) from None
            raise
        finally:
            if old is not None and (old.exists() or old.is_symlink()):
                _remove(old)


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (non-JSON values as ``str``) atomically."""
    text = json.dumps(data, indent=indent, default=str) + "\n"
    with atomic_path(path, expected_bytes=len(text.encode("utf-8"))) as tmp:
        tmp.write_text(text, encoding="utf-8")

