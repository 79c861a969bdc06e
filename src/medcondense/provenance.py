"""What every output records about the run that made it (nnU-Net-style run info).

The command line is stored with input paths replaced by placeholders (``<input1>``), because
hospital folder names often hold patient names.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from medcondense import __version__


def redact_argv(argv: Iterable[str], paths: Iterable[str | Path],
                identifiers: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Replace every given path (and any argument containing it) by ``<pathN>``, and every
    identifier (e.g. a study UID) by its placeholder."""
    replacements: list[tuple[str, str]] = [(value, placeholder) for value, placeholder in identifiers]
    for i, p in enumerate(paths, 1):
        for form in {str(p), str(Path(p)), str(Path(p).resolve())}:
            replacements.append((form.rstrip("/"), f"<path{i}>"))
    replacements.sort(key=lambda r: -len(r[0]))
    out = []
    for arg in argv:
        for old, new in replacements:
            if old and old in arg:
                arg = arg.replace(old, new)
        out.append(arg)
    return out


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape results (only those already imported: no import cost)."""
    versions = {"medcondense": __version__, "python": platform.python_version()}
    for name in ("numpy", "torch", "pydicom", "nibabel", "SimpleITK", "h5py"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", getattr(module, "Version", lambda: "?")))
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        versions["cuda"] = str(torch.version.cuda)
    return versions


def make_provenance(
    *,
    stage: str,
    config: dict[str, Any],
    paths: Iterable[str | Path] = (),
    input_hash: str | None = None,
    seed: int | None = None,
    device: str | None = None,
    started: float | None = None,
    extra: dict[str, Any] | None = None,
    identifiers: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The provenance dict stored as the ``provenance`` attribute of an output file.

    ``paths`` become ``<pathN>`` and each ``(value, placeholder)`` of ``identifiers`` its
    placeholder, in the command line and in the config.
    """
    paths, identifiers = list(paths), list(identifiers)
    record: dict[str, Any] = {
        "stage": stage,
        "tool_version": __version__,
        "command_line": redact_argv(sys.argv, paths, identifiers),
        "config": _redact_config(config, paths, identifiers),
        "input_hash": input_hash,
        "seed": seed,
        "device": device,
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if started is not None:
        record["wall_time_s"] = round(time.time() - started, 3)
    if extra:
        record.update(extra)
    return record


def _redact_config(config: dict[str, Any], paths: list[str | Path],
                   identifiers: list[tuple[str, str]] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact_argv([value], paths, identifiers)[0]
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return clean(config)
