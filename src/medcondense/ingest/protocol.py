"""A shared ingest protocol: the settings that shape the images, pinned, so sites agree.

Two sites that ingest with one protocol (``ingest --protocol FILE``) write files that are
compatible by construction: same image size and spacing, same window rule, same slice selection
and channel handling, the same class names in the same order, and for ``--normalize zscore`` or
``ct`` the *source site's* constants (so every site's stored values are one affine map of the same
windowed values, and ``ct`` clips at the same bounds). ``merge`` checks the same settings.

A protocol comes from a medcondense set (real, synthetic, subset or merged: its ``preprocessing``,
``normalization``, ``class_names``, ``modality`` and ``laterality`` attributes) or from the YAML
file ``export --format protocol`` writes (:func:`to_yaml`). YAML layout::

    format: medcondense-protocol/1
    settings: {size: 32, spacing: null, window: percentile, percentiles: [0.5, 99.5],
               normalize: window, channels: grey, axis: 2, slices: all}
    class_names: [a, b, c]
    modality: MR
    laterality: true
    normalization: {method: zscore, params: {mean: [..], std: [..]}}   # the pinned constants
    source: {content_hash: ..., kind: real}

Windows: a protocol pins a *rule* (a preset, ``C/W``, ``percentile`` or ``none``). ``auto`` and
``voi`` vary per file, so a source set made with them is recorded as the one rule they resolved to
(e.g. ``auto`` on NIfTI -> ``percentile``, on CT without a VOI -> ``abdomen``); a set where they
resolved to several windows, or to each file's own VOI, is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcondense.errors import ConfigError, StoreError
from medcondense.ingest import window as win

log = logging.getLogger(__name__)

FORMAT = "medcondense-protocol/1"
# IngestConfig fields a protocol pins (their CLI spelling is --<name with dashes>)
SETTINGS = ("size", "spacing", "window", "percentiles", "normalize", "channels", "axis", "slices")
PINNED_NORMALIZATIONS = ("zscore", "ct")


@dataclass
class Protocol:
    """What a site must agree on; see the module docstring."""

    settings: dict[str, Any]
    class_names: list[str]
    modality: str | None = None
    laterality: bool | None = None
    normalization: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # the file it was read from (for messages; not part of the protocol)

    def to_dict(self) -> dict[str, Any]:
        """The YAML/JSON form (without ``origin``)."""
        out = {"format": FORMAT, "settings": dict(self.settings), "class_names": list(self.class_names),
               "modality": self.modality, "laterality": self.laterality,
               "normalization": self.normalization, "source": dict(self.source)}
        out["settings"]["percentiles"] = list(out["settings"].get("percentiles") or (0.5, 99.5))
        return out

    def pinned_params(self) -> dict[str, Any] | None:
        """The source site's zscore/ct constants, or None (``window`` needs none)."""
        norm = self.normalization or {}
        if norm.get("method") in PINNED_NORMALIZATIONS and norm.get("params"):
            return dict(norm["params"])
        return None


# ----------------------------------------------------------------------------- window rules


def window_rule(preprocessing: dict[str, Any]) -> str:
    """The one window rule a set was made with, as ``--window`` spells it.

    Raises
    ------
    ConfigError
        ``auto``/``voi`` resolved to several windows, to each file's own VOI, or to a colour range.
    """
    name = str(preprocessing.get("window") or "auto")
    used = dict(preprocessing.get("windows_used") or {})
    if name.startswith("none"):
        return "none"
    if name not in ("auto", "voi"):
        return name
    resolved = sorted({_rule_name(k) for k in used})
    if len(resolved) != 1:
        found = ", ".join(f"{k} ({v} images)" for k, v in sorted(used.items())) or "nothing recorded"
        raise ConfigError(
            f"window {name!r} resolved to several windows at the source ({found}); a protocol pins one "
            "rule: ingest the source again with an explicit --window (a preset, C/W or percentile)"
        )
    rule = resolved[0]
    if rule == "voi":
        raise ConfigError(
            f"window {name!r} used each file's own VOI window, which varies per file and cannot be pinned; "
            "ingest the source again with an explicit --window (a preset, C/W or percentile)"
        )
    if rule == "colour range":
        raise ConfigError("window 'auto' used the colour bit range; give --window explicitly for a protocol")
    return rule


def _rule_name(resolved_name: str) -> str:
    return "percentile" if resolved_name.startswith("percentile") else resolved_name


def same_window(a: str, b: str) -> bool:
    """Whether two ``--window`` texts are one rule (``brain`` equals ``40/80``)."""
    try:
        sa, sb = win.parse_window(a), win.parse_window(b)
    except ConfigError:
        return a == b
    return (sa.kind, sa.center, sa.width) == (sb.kind, sb.center, sb.width)


# ----------------------------------------------------------------------------- reading


def from_attrs(attrs: dict[str, Any], origin: str = "") -> Protocol:
    """The protocol of a medcondense set, from its root attributes (see :func:`window_rule`)."""
    pre = attrs.get("preprocessing")
    if not isinstance(pre, dict):
        raise ConfigError("the set records no preprocessing (was it made by `medcondense ingest`?)", path=origin or None)
    try:
        rule = window_rule(pre)
    except ConfigError as exc:
        raise ConfigError(exc.message, path=origin or None) from None
    settings = {
        "size": int(pre.get("size") or (attrs.get("image_shape") or [0, 0, 0])[-1]),
        "spacing": pre.get("spacing"),
        "window": rule,
        "percentiles": [float(v) for v in pre.get("percentiles") or (0.5, 99.5)],
        "normalize": str(pre.get("normalization") or (attrs.get("normalization") or {}).get("method") or "window"),
        "channels": str(pre.get("channels") or "grey"),
        "axis": int(pre.get("axis", 2)),
        "slices": str(pre.get("slices") or "all"),
    }
    norm = attrs.get("normalization") or {}
    pinned = None
    if norm.get("method") in PINNED_NORMALIZATIONS:
        pinned = {"method": norm["method"], "params": norm.get("params") or {}}
    return Protocol(
        settings=settings, class_names=[str(c) for c in attrs.get("class_names") or []],
        modality=attrs.get("modality"), laterality=attrs.get("laterality"), normalization=pinned,
        source={"content_hash": attrs.get("content_hash"), "kind": attrs.get("kind")}, origin=origin,
    )


def from_dict(data: Any, origin: str = "") -> Protocol:
    """A protocol from its YAML/JSON form; ConfigError naming what is wrong."""
    where = origin or None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"not a medcondense protocol (expected 'format: {FORMAT}')", path=where)
    settings = data.get("settings")
    if not isinstance(settings, dict):
        raise ConfigError("protocol: 'settings' must be a mapping", path=where)
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"protocol: unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}", path=where)
    missing = [name for name in SETTINGS if name not in settings]
    if missing:
        raise ConfigError(f"protocol: missing setting(s) {', '.join(missing)}", path=where)
    names = data.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError("protocol: 'class_names' must be a non-empty list of names", path=where)
    if len(set(names)) != len(names):
        raise ConfigError("protocol: 'class_names' has duplicates", path=where)
    norm = data.get("normalization")
    if norm is not None and (not isinstance(norm, dict) or norm.get("method") not in PINNED_NORMALIZATIONS):
        raise ConfigError("protocol: 'normalization' must be {method: zscore|ct, params: {...}} or absent", path=where)
    try:
        win.parse_window(str(settings["window"]))
    except ConfigError as exc:
        raise ConfigError(f"protocol: {exc.message}", path=where) from None
    if str(settings["window"]).strip().lower() in ("auto", "voi"):
        raise ConfigError("protocol: the window must be a fixed rule (a preset, C/W, percentile or none), "
                          "not auto or voi, which vary per file", path=where)
    return Protocol(settings=dict(settings), class_names=list(names), modality=data.get("modality"),
                    laterality=data.get("laterality"), normalization=norm,
                    source=dict(data.get("source") or {}), origin=origin)


def load(path: str | Path) -> Protocol:
    """Read a protocol from a medcondense ``.h5`` set or a protocol YAML file."""
    from medcondense import store

    path = Path(path)
    if not path.is_file():
        raise ConfigError("protocol file not found", path=path)
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        try:
            attrs = store.read_attrs(path)
        except StoreError as exc:
            raise ConfigError(f"cannot use as a protocol: {exc.message}", path=path) from None
        return from_attrs(attrs, str(path))
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"not a protocol YAML or medcondense set ({type(exc).__name__})", path=path) from None
    return from_dict(data, str(path))


def to_yaml(protocol: Protocol) -> str:
    """The protocol as YAML text with a short header comment."""
    import yaml

    header = ("# medcondense ingest protocol: every site ingests with `medcondense ingest --protocol THIS_FILE`\n"
              "# so their files merge and compare. Written by `medcondense export --format protocol`.\n")
    return header + yaml.safe_dump(protocol.to_dict(), sort_keys=False, default_flow_style=None)


# ----------------------------------------------------------------------------- applying


def _same(name: str, given: Any, pinned: Any) -> bool:
    if name == "window":
        return same_window(str(given), str(pinned))
    if name == "percentiles":
        return [float(v) for v in given] == [float(v) for v in pinned]
    if name == "spacing":
        return (given is None and pinned is None) or (given is not None and pinned is not None
                                                       and abs(float(given) - float(pinned)) < 1e-9)
    if name == "slices":
        return str(given).strip().lower() == str(pinned).strip().lower()
    return str(given) == str(pinned)


def apply(config: Any, protocol: Protocol, explicit: set[str] | None = None) -> Any:
    """``config`` (an IngestConfig) with the protocol's settings; ConfigError on a contradiction.

    ``explicit`` names the options the user gave (CLI, ``--set`` or YAML); None means "those that
    differ from the defaults" (the Python API, where nothing else is known). A given option that
    differs from the protocol is a contradiction, exit 2, naming the option.
    """
    defaults = type(config)()
    values: dict[str, Any] = {}
    for name in SETTINGS:
        pinned = protocol.settings[name]
        given = getattr(config, name)
        was_given = (name in explicit) if explicit is not None else not _same(name, given, getattr(defaults, name))
        if was_given and not _same(name, given, pinned):
            raise ConfigError(
                f"--{name.replace('_', '-')} {_show(given)} contradicts the protocol, which pins "
                f"{name} = {_show(pinned)}; leave the option out (or use another protocol)",
                path=protocol.origin or None,
            )
        values[name] = tuple(pinned) if name == "percentiles" else pinned
    laterality_given = ("laterality" in explicit) if explicit is not None else config.laterality != defaults.laterality
    if protocol.laterality is not None and not laterality_given:
        values["laterality"] = bool(protocol.laterality)
    return dataclasses.replace(config, **values)


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)
