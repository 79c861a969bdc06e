"""Plain command-line values without pydantic: a start-up saving for every command.

Typer (0.2x) converts every option's value through a pydantic ``TypeAdapter`` that it builds on
first use, even for an option left out (whose value is ``None`` and needs no conversion).
Importing pydantic and building ~35 adapters costs about 0.1-0.15 CPU s per command, more than
the whole rest of the command-line handling, and as much as ingesting 150 DICOM slices.

This module gives each option of the plain kinds medcondense uses (``str``, ``bool``, ``int``,
``float``, ``Path`` and lists of them) a converter that handles the unambiguous cases itself, as typer
would: ``None`` stays ``None`` (``()`` for a list), a decimal string becomes an ``int``/``float``,
a string becomes a ``Path`` checked by typer's own path checks. Every other value (``abc`` for
an ``int``, ``inf``, an empty path, a string that is not valid UTF-8, ...) goes to typer's own
converter, built then, so what is accepted and every error message stay typer's.

It relies on typer internals (``_runtime_param``, ``type_descriptor``, ``coerce_cli_path``);
when they are not there (another typer version), :func:`install` changes nothing and typer
converts as usual. ``tests/test_cli.py`` checks that an ingest does not import pydantic, and
that bad values are refused with typer's messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, List

_INT = re.compile(r"[+-]?(?:0|[1-9][0-9]{0,17})", re.ASCII)
_FLOAT = re.compile(r"[+-]?[0-9]{1,18}(?:\.[0-9]{1,18})?(?:[eE][+-]?[0-9]{1,2})?", re.ASCII)
_NO = object()  # "not a plain case: let typer convert it"


def _as_str(value: Any, param: Any, ctx: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # surrogate-escaped bytes: typer/pydantic decide
        except UnicodeEncodeError:
            return _NO
        return value
    return _NO


def _as_bool(value: Any, param: Any, ctx: Any) -> Any:
    return value if type(value) is bool else _NO


def _as_int(value: Any, param: Any, ctx: Any) -> Any:
    if type(value) is int:
        return value
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    return _NO


def _as_float(value: Any, param: Any, ctx: Any) -> Any:
    if type(value) is float:
        return value
    if isinstance(value, str) and _FLOAT.fullmatch(value):
        return float(value)
    return _NO


def _path_converter() -> Callable[[Any, Any, Any], Any] | None:
    try:
        from typer._param_types import coerce_cli_path
    except ImportError:
        return None

    def as_path(value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and value and _as_str(value, param, ctx) is not _NO:
            value = Path(value)
        if not isinstance(value, Path):
            return _NO
        # typer's own checks (exists, readable, ...) and messages, on a value already a Path
        return coerce_cli_path(value, param.type_descriptor.parameter_info, path_type=Path, param=param, ctx=ctx)

    return as_path


class PlainValue:
    """Stands in for typer's converter of one option (same ``coerce`` call), building typer's
    own only for a value it does not handle."""

    def __init__(self, convert: Callable[[Any, Any, Any], Any]) -> None:
        self._convert = convert
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        many = param.multiple or param.nargs == -1
        if value is None:
            return () if many else None
        if many and isinstance(value, (list, tuple)):
            converted = [self._convert(item, param, ctx) for item in value]
            if all(item is not _NO for item in converted):
                return converted
        elif not many:
            converted = self._convert(value, param, ctx)
            if converted is not _NO:
                return converted
        return self._typers(param).coerce(value, param=param, ctx=ctx)

    def _typers(self, param: Any) -> Any:
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(param.type_descriptor)
        return self._typer


def _converter(param: Any, as_path: Callable[[Any, Any, Any], Any] | None) -> Callable[[Any, Any, Any], Any] | None:
    """The plain converter for ``param``, or None where typer must convert (constraints, custom
    parsers, files, other types)."""
    descriptor = getattr(param, "type_descriptor", None)
    info = getattr(descriptor, "parameter_info", None)
    if descriptor is None or info is None or getattr(descriptor, "file_annotation", 0) is not None:
        return None
    if getattr(info, "parser", 0) is not None:
        return None
    annotation = descriptor.annotation
    if annotation in (List[str], list[str], List[Path], list[Path]):
        annotation = annotation.__args__[0]
    if annotation is str:
        return _as_str
    if annotation is bool:
        return _as_bool
    if annotation in (int, float):
        if any(getattr(info, name, 0) not in (None, False) for name in ("min", "max", "clamp")):
            return None
        return _as_int if annotation is int else _as_float
    if annotation is Path and as_path is not None:
        if getattr(info, "path_type", 0) is not None or getattr(info, "resolve_path", 1) or getattr(info, "allow_dash", 1):
            return None
        return as_path
    return None


def install(params: Any) -> int:
    """Give each plain option of ``params`` its :class:`PlainValue`; returns how many got one."""
    as_path = _path_converter()
    done = 0
    for param in params:
        if getattr(param, "_runtime_param", 0) is not None:  # not typer's lazy slot: leave it
            continue
        convert = _converter(param, as_path)
        if convert is not None:
            param._runtime_param = PlainValue(convert)
            done += 1
    return done


class PlainValues:
    """Mixin for a typer command or group class: its options, and the ``--help`` option click
    adds on first use, convert plain values with :class:`PlainValue`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        install(getattr(self, "params", []))

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            install([option])
        return option
