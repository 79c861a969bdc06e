"""Run keys and "skip if done": one helper for every stage that writes one output.

A stage computes a *run key* from everything that decides its output (input content hashes and
the resolved options, never paths or ``--overwrite``), records it in the output, and before
doing any work calls :func:`skip_if_done`:

* no output yet, or ``overwrite``: go on;
* the output records the same key: :class:`~medcondense.errors.AlreadyDone` (not an error: the
  CLI prints "up to date" with the recorded summary and exits 0);
* anything else (another key, no key, a file that cannot be read): :class:`ConfigError`
  "output exists from a different run; pass --overwrite to replace it" (exit 2), so nothing is
  replaced by accident.

How a key is recorded differs by output, so :func:`skip_if_done` takes a *record reader*,
``summary(output) -> (recorded_run_key or None, summary dict)``:

* :func:`hdf5_record` for HDF5 outputs (ingest, distill: the root attribute ``run_key``);
* :func:`json_record` for JSON reports (evaluate: the top-level ``run_key``).

A reader may raise ``OSError``, ``ValueError`` or a ``StoreError`` for an unreadable output;
:func:`skip_if_done` treats that as a different run.

API::

    run_key(parts: Mapping[str, Any]) -> str
    skip_if_done(output: str | Path, run_key: str, overwrite: bool, summary: RecordReader) -> None
    hdf5_record(summarize: Callable[[Path, dict], dict] | None = None) -> RecordReader
    json_record(output: Path) -> tuple[str | None, dict]

Ingest's key is :func:`medcondense.ingest.pipeline.run_key_of` (each input file's name and
content digest, taken from the one read ingest makes of every file, plus the options); it goes
through :func:`skip_if_done` the same way. File contents are fingerprinted with BLAKE3
(:func:`content_digest`, :func:`file_digest`): a cryptographic 256-bit hash like SHA-256, and
3-5x faster on one core, which matters because ingest hashes every byte of every input file
(docs/results.md, "Ingest against dcm2niix").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from medcondense.errors import AlreadyDone, ConfigError, StoreError

#: ``summary(output) -> (recorded run key or None, summary for AlreadyDone)``
RecordReader = Callable[[Path], "tuple[str | None, dict[str, Any]]"]

REFUSAL = "output exists from a different run; pass --overwrite to replace it"


def _plain(value: Any) -> Any:
    """JSON form of the numpy scalars/arrays and paths that options and hyper-parameters may hold."""
    if hasattr(value, "tolist"):  # numpy scalar or array, without importing numpy here
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"run key part of type {type(value).__name__} is not JSON-able")


def canonical_json(parts: Any) -> str:
    """Sorted keys, no spaces: the same parts always give the same text."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_plain)


def run_key(parts: Mapping[str, Any]) -> str:
    """SHA-256 (hex, 64 characters) of the canonical JSON of ``parts``."""
    return hashlib.sha256(canonical_json(dict(parts)).encode()).hexdigest()


#: prefix of a file content digest, naming its algorithm (a key made with another one never matches)
DIGEST_PREFIX = "blake3:"


def content_digest(data: bytes | bytearray | memoryview) -> str:
    """Fingerprint of a file's bytes already in memory: ``blake3:`` and 64 hex digits."""
    from blake3 import blake3  # ingest only; distill and evaluate never hash input files

    return DIGEST_PREFIX + blake3(data).hexdigest()


def file_digest(path: str | Path, block: int = 1 << 20) -> str:
    """:func:`content_digest` of a file, read in blocks (a large NIfTI is never held whole)."""
    from blake3 import blake3

    h = blake3()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return DIGEST_PREFIX + h.hexdigest()


def skip_if_done(output: str | Path, run_key: str, overwrite: bool, summary: RecordReader) -> None:
    """Raise AlreadyDone when ``output`` records ``run_key``; ConfigError when it exists otherwise.

    Returns quietly when ``output`` does not exist or ``overwrite`` is set. ``summary`` reads the
    recorded key and the summary that AlreadyDone carries (see :func:`hdf5_record`,
    :func:`json_record`).
    """
    output = Path(output)
    if overwrite or not output.exists():
        return
    try:
        recorded, found = summary(output)
    except (OSError, ValueError, StoreError):
        recorded, found = None, {}
    if recorded is not None and recorded == run_key:
        raise AlreadyDone(str(output), found)
    raise ConfigError(REFUSAL, path=output)


def hdf5_record(summarize: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None) -> RecordReader:
    """A reader for a medcondense HDF5 output: its ``run_key`` attribute and ``summarize(path, attrs)``.

    ``attrs`` are :func:`medcondense.store.read_attrs`' (root attributes plus ``n`` and
    ``image_shape``); no images are loaded.
    """

    def read(output: Path) -> tuple[str | None, dict[str, Any]]:
        from medcondense import store

        attrs = store.read_attrs(output)
        return attrs.get("run_key") or None, (summarize(output, attrs) if summarize else {})

    return read


def json_record(output: Path) -> tuple[str | None, dict[str, Any]]:
    """A reader for a JSON report: its top-level ``run_key``; the whole report is the summary."""
    report = json.loads(output.read_text(encoding="utf-8"))
    if not isinstance(report, dict):
        return None, {}
    key = report.get("run_key")
    return (key if isinstance(key, str) else None), report
