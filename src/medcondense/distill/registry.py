"""The distillation methods by name: a table read by the CLI, the option checks and the engine.

It imports no torch, so ``medcondense distill --help`` can list the methods cheaply. A method's
module is imported only when :func:`method_class` asks for it (no registration side effects, no
import circle between the engine and the methods).

Adding a synthetic method is one new file ``distill/<name>.py`` with a
:class:`~medcondense.distill.base.Method` subclass (``name = "<name>"``) and one line in
:data:`METHODS`; docs/distill.md ("Adding a method") describes the API.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from medcondense.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only, keeps torch out of this module
    from medcondense.distill.base import Method

#: synthetic methods: name -> ``"module:Class"`` (a :class:`~medcondense.distill.base.Method`)
METHODS: dict[str, str] = {
    "dc": "medcondense.distill.dc:DCMethod",
    "dsa": "medcondense.distill.dsa:DSAMethod",
    "dm": "medcondense.distill.dm:DMMethod",
    "mtt": "medcondense.distill.mtt:MTTMethod",
    "dp-dm": "medcondense.distill.dpdm:DPDMMethod",  # --method dm --dp-epsilon E (docs/distill.md)
}

#: coreset baselines (output kind ``subset``), implemented in :mod:`medcondense.distill.coreset`
CORESETS: tuple[str, ...] = ("random", "herding", "kcenter")


def method_names() -> list[str]:
    """Every valid ``--method``: the synthetic methods in table order, then the coresets."""
    return [*METHODS, *CORESETS]


def is_coreset(name: str) -> bool:
    """True when ``name`` picks real images (a coreset) rather than synthesizing them."""
    return name in CORESETS


def method_class(name: str) -> "type[Method]":
    """The :class:`~medcondense.distill.base.Method` subclass called ``name``, imported on demand.

    Raises
    ------
    ConfigError
        ``name`` is not a synthetic method (the message lists the valid names; a coreset name
        says that it is a coreset).
    """
    if name not in METHODS:
        if name in CORESETS:
            raise ConfigError(f"{name!r} is a coreset, not a synthetic method; synthetic methods are {', '.join(METHODS)}")
        raise ConfigError(f"unknown method {name!r}; expected one of {', '.join(method_names())}")
    module_name, _, class_name = METHODS[name].partition(":")
    cls = getattr(import_module(module_name), class_name, None)
    if cls is None:
        raise ImportError(f"method table entry {name!r}: {module_name} has no class {class_name!r}")
    if getattr(cls, "name", None) != name:  # hp.method, checkpoints and outputs use the class's name
        raise ImportError(f"method table entry {name!r}: {METHODS[name]} is named {getattr(cls, 'name', None)!r}")
    return cls
