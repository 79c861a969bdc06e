"""``medcondense export``: check the options, read the set, run the exporters, swap the folder in.

Everything is written into a private ``.<outdir>.<random>.tmp`` folder and renamed to ``<outdir>`` only when every
format is complete; with ``--overwrite`` the old folder is replaced after that, so an error or
Ctrl-C never leaves a half-written export. ``<outdir>/export.json`` records the input's content
hash and the options: re-running with the same ones is a no-op.
"""

from __future__ import annotations

import json
import logging
from importlib import import_module
from pathlib import Path
from typing import Any

from medcondense import __version__, store
from medcondense.atomic import atomic_dir
from medcondense.config import ExportConfig
from medcondense.console import progress
from medcondense.errors import AlreadyDone, ConfigError
from medcondense.export.context import ExportContext, FormatResult

log = logging.getLogger(__name__)

# name -> module with FOLDER, CHANNELS and export(ctx, root) -> FormatResult; the card runs last
FORMATS: dict[str, str] = {
    "png": "medcondense.export.png",
    "nifti": "medcondense.export.nifti",
    "dicom": "medcondense.export.dicom",
    "npz": "medcondense.export.npz",
    "protocol": "medcondense.export.protocol",
    "card": "medcondense.export.card",
}
ALL = "all"
# `all` means the image formats and the card; the protocol (settings for other sites' ingest) is
# asked for by name, since a set whose window cannot be pinned has none
NOT_IN_ALL = ("protocol",)
MARKER = "export.json"
REAL_KINDS = store.REAL_KINDS  # real, subset, mixed: DICOM of them needs --allow-real


def parse_formats(items: list[str]) -> list[str]:
    """Expand ``all``, drop duplicates, keep the card last; ConfigError on an unknown name."""
    chosen: list[str] = []
    for item in items:
        for name in (part.strip().lower() for part in str(item).split(",")):
            if not name:
                continue
            if name == ALL:
                chosen.extend(f for f in FORMATS if f not in NOT_IN_ALL)
            elif name in FORMATS:
                chosen.append(name)
            else:
                raise ConfigError(f"unknown export format {name!r}; expected {', '.join([*FORMATS, ALL])}")
    if not chosen:
        raise ConfigError(f"no export format given; expected {', '.join([*FORMATS, ALL])}")
    return sorted(set(chosen), key=list(FORMATS).index)


def run(config: ExportConfig) -> dict[str, Any]:
    """Export ``config.input`` in the chosen formats into ``config.output``; returns the result dict.

    Raises
    ------
    ConfigError
        Unknown format, bad ``--uid-root``, unreadable ``--report``, an existing non-empty
        output without ``--overwrite``, DICOM of real images without ``--allow-real``, or a
        channel count a format cannot hold.
    StoreError
        The input is not a medcondense file, or is damaged.
    AlreadyDone
        The output was made from the same set with the same options.
    """
    formats = parse_formats(config.formats)
    if "dicom" in formats:
        from medcondense.export.dicom import validate_uid_root

        validate_uid_root(config.uid_root)
    if not config.input or not config.output:
        raise ConfigError("export needs an input file and an output folder (-o)")
    input_path, out = Path(config.input), Path(config.output)
    image_set = _read_input(input_path)
    _check_allowed(image_set, formats, config, input_path)
    reports = load_reports(config.report)
    digest = image_set.attrs.get("content_hash") or store.content_hash(image_set)  # verified on read
    key = _run_key(digest, formats, config, reports)
    _check_output(out, key, config.overwrite)
    ctx = ExportContext(
        image_set=image_set, input_name=input_path.name, digest=digest, stack=config.stack,
        uid_root=config.uid_root, reports=reports, license=config.license, png_bits=config.png_bits,
    )
    if not ctx.intensity.known:
        log.warning("%s: %s", input_path.name, ctx.intensity.description)
    result = _result(ctx, out, formats)
    _write_atomically(out, lambda tmp: _export_all(ctx, formats, tmp, key, result), config.overwrite)
    return result


def _read_input(path: Path) -> store.ImageSet:
    """Read and check the input (StoreError for a file that is not ours or was altered)."""
    return store.read(path, verify_hash=True)


def _check_allowed(image_set: store.ImageSet, formats: list[str], config: ExportConfig, path: Path) -> None:
    """Refuse DICOM of real images without --allow-real, and channel counts a format cannot hold."""
    if "dicom" in formats and image_set.kind in REAL_KINDS and not config.allow_real:
        raise ConfigError(
            f"is a {image_set.kind} set of real patient images; DICOM export of real images needs "
            "--allow-real (identifiers are stripped either way)", path=path,
        )
    channels = image_set.image_shape[0]
    if "png" in formats:
        from medcondense.export.png import check_bits

        check_bits(config.png_bits, channels)
    for name in formats:
        allowed = getattr(import_module(FORMATS[name]), "CHANNELS", None)
        if allowed is not None and channels not in allowed:
            raise ConfigError(
                f"{name} export holds {' or '.join(map(str, allowed))}-channel images, this set has {channels} "
                "(use --format nifti)", path=path,
            )


def load_reports(paths: list[str]) -> dict[str, Any]:
    """Parse the ``--report`` JSON files, by file name; ConfigError when one cannot be read."""
    reports: dict[str, Any] = {}
    for raw in paths or []:
        path = Path(raw)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the report ({exc.strerror or exc})", path=path) from None
        try:
            reports[path.name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the report is not JSON ({exc.msg} at line {exc.lineno})", path=path) from None
    return reports


def _run_key(digest: str, formats: list[str], config: ExportConfig, reports: dict[str, Any]) -> dict[str, Any]:
    """What makes two exports the same: input content, formats, options, reports, tool version."""
    reports_hash = store.hash_files([], extra=reports) if reports else None
    return {
        "input_hash": digest, "formats": formats, "stack": config.stack, "uid_root": config.uid_root,
        "license": config.license, "reports_hash": reports_hash, "tool_version": __version__,
        **({"png_bits": config.png_bits} if config.png_bits != 8 else {}),  # old markers stay valid
    }


def _check_output(out: Path, key: dict[str, Any], overwrite: bool) -> None:
    """AlreadyDone when ``out`` holds this very export; ConfigError when it holds anything else."""
    if out.exists() and not out.is_dir():
        raise ConfigError("output exists and is not a folder", path=out)
    if overwrite or not out.exists() or not any(out.iterdir()):
        return
    marker = out / MARKER
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = {}
        if previous.get("key") == key:
            raise AlreadyDone(out, previous.get("result"))
    raise ConfigError("output folder exists and is not empty; pass --overwrite to replace it", path=out)


def _result(ctx: ExportContext, out: Path, formats: list[str]) -> dict[str, Any]:
    s = ctx.image_set
    return {
        "output": str(out), "input": ctx.input_name, "kind": s.kind, "synthetic": ctx.is_synthetic,
        "method": ctx.method, "images": s.n, "classes": s.num_classes,
        "values": ctx.intensity.description, "formats": {name: {} for name in formats},
    }


def _export_all(ctx: ExportContext, formats: list[str], root: Path, key: dict[str, Any], result: dict[str, Any]) -> None:
    """Run each exporter into ``root``, then write the marker."""
    with progress("export", total=len(formats)) as bar:
        for name in formats:
            bar.update(status=name)
            fmt: FormatResult = import_module(FORMATS[name]).export(ctx, root)
            ctx.results[name] = fmt
            result["formats"][name] = fmt.to_dict()
            log.info("%s: %d files in %s/", name, fmt.files, fmt.folder)
            bar.advance()
    (root / MARKER).write_text(json.dumps({"key": key, "result": result}, indent=2, default=str) + "\n", encoding="utf-8")


def _write_atomically(out: Path, write: Any, overwrite: bool) -> None:
    """Call ``write(tmp)`` on a private temporary folder beside ``out``, then publish it as
    ``out`` (replacing it if asked) through :func:`medcondense.atomic.atomic_dir`."""
    with atomic_dir(out, replace=overwrite) as tmp:
        write(tmp)


def render(result: dict[str, Any], console: Any) -> None:
    """The result as a rich table on stdout."""
    from rich.table import Table

    if result.get("skipped"):
        console.print(f"{result.get('output')}: up to date (same set, same options); nothing written")
        return
    kind = "SYNTHETIC" if result.get("synthetic") else f"REAL ({result.get('kind')})"
    table = Table(title=f"export of {result['input']}: {kind}, {result['images']} images, {result['classes']} classes")
    for column in ("format", "folder", "files", "notes"):
        table.add_column(column)
    for name, info in result.get("formats", {}).items():
        table.add_row(name, str(info.get("folder", "")), str(info.get("files", "")), "; ".join(info.get("notes", [])))
    console.print(table)
    console.print(f"values: {result.get('values')}")
    console.print(f"written to {result['output']}")
