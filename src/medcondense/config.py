"""Stage configurations: dataclasses, YAML files and ``--set key=value`` overrides.

Precedence, lowest first: the dataclass defaults, each ``--config`` YAML file in order (a file
holds one mapping per stage, e.g. ``distill: {ipc: 10}``), each ``--set stage.key=value``, and
finally the options given explicitly on the command line.

Every stage owns one dataclass here; the CLI only fills it in and hands it to the stage's
``run(config)``. Keep fields JSON-serializable: the whole config is recorded in provenance.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TypeVar

from medcondense.errors import ConfigError

DEFAULT_DATA_FILE = "data.h5"
WORKDIR_ENV = "MEDCONDENSE_WORKDIR"


@dataclass
class IngestConfig:
    """Options of ``medcondense ingest`` (see ``medcondense ingest --help``)."""

    inputs: list[str] = field(default_factory=list)
    output: str | None = None
    size: int = 64
    spacing: float | None = None
    window: str = "auto"
    percentiles: tuple[float, float] = (0.5, 99.5)
    normalize: str = "window"
    channels: str = "grey"
    axis: int = 2
    slices: str = "all"
    mask_suffix: str | None = None
    labels_csv: str | None = None
    label_tag: str | None = None
    allow_identifying_label_tag: bool = False
    allow_burned_in: bool = False
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    site: str | None = None
    modality: str | None = None
    laterality: bool = True
    hash_paths: bool = False
    workers: int = 1
    on_error: str = "skip"
    rejects: str | None = None
    protocol: str | None = None  # a set or protocol YAML pinning the image-shaping settings
    seed: int = 0
    overwrite: bool = False
    # DICOMweb inputs (medcondense.ingest.dicomweb)
    studies: list[str] = field(default_factory=list)
    query: str | None = None
    cache: str | None = None
    input_format: str = "auto"
    class_names: list[str] | None = None


@dataclass
class DistillConfig:
    """Options of ``medcondense distill``."""

    input: str | None = None
    output: str | None = None
    method: str = "dsa"
    ipc: int = 10
    preset: str = "quick"
    iterations: int | None = None
    outer_loop: int | None = None
    inner_loop: int | None = None
    lr_img: float | None = None
    lr_net: float = 0.01
    batch_real: int | None = None  # None: from --preset (quick 64, paper 256 = the reference)
    init: str | None = None  # None: real, or noise with --dp-epsilon
    aug: list[str] | None = None
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    batch_classes: str = "auto"
    amp: str = "auto"
    compile: str = "auto"
    checkpoint_every: int = 50
    resume: bool = False
    overwrite: bool = False
    # differential privacy (DP-DM, docs/distill.md): off unless dp_epsilon is set
    dp_epsilon: float | None = None
    dp_delta: float | None = None  # None: 1e-5
    dp_clip: float = 1.0
    dp_unit: str = "patient"
    dp_queries: int = 50
    dp_accountant: str = "rdp"
    # MTT (--method mtt) only; None: from --preset and the per-IPC table (docs/distill.md)
    syn_steps: int | None = None
    expert_epochs: int | None = None
    max_start_epoch: int | None = None
    lr_lr: float | None = None
    lr_teacher: float | None = None
    batch_syn: int | None = None  # None: all synthetic images in every student step
    num_experts: int | None = None
    train_epochs: int | None = None
    experts: str | None = None  # an expert trajectory file; None: <input>.experts/<key>.h5, built when absent
    experts_only: bool = False
    unroll: str | None = None  # walk (default) | full


@dataclass
class EvaluateConfig:
    """Options of ``medcondense evaluate``."""

    inputs: list[str] = field(default_factory=list)
    real: str | list[str] | None = None  # several files: cross-site evaluation (one site each)
    models: int = 5
    epochs: int | None = None
    arch: str = "convnet"
    train_aug: str | None = None  # None: "none", but an MTT set (learned_lr) trains with "dsa"
    baselines: list[str] = field(default_factory=lambda: ["random", "full"])
    test_site: str | None = None
    per_site: bool = False  # one real file holding several sites: test at each (cross-site)
    lr: float | None = None  # None: 0.01, but an MTT set trains at its learned_lr
    batch_size: int = 256
    full_steps: int = 1000  # SGD-step budget of the full-train-split baseline (see docs/evaluate.md)
    device: str = "auto"
    seed: int = 0
    output: str | None = None
    plot: str | None = None
    allow_mismatch: bool = False
    overwrite: bool = False


@dataclass
class ScoreConfig:
    """Options of ``medcondense score``."""

    data: str | None = None
    syn: str | None = None
    ipc: list[int] | None = None  # None: 1,10,50 before distilling; none when a synthetic file is given
    repeats: int = 3
    epochs: int = 300
    device: str = "auto"
    seed: int = 0
    ssim_threshold: float = 0.95
    cosine_threshold: float = 0.98
    fail_on_copies: bool = False
    pairs_dir: str | None = None
    calibration: str | None = None
    calibrate: list[str] = field(default_factory=list)
    output: str | None = None
    full_steps: int = 1000  # as evaluate.full_steps, so both stages share one cached full baseline
    embed_nets: int = 3
    per_site: bool = False  # also the indicator and privacy audit per recorded site
    max_per_class: int = 500
    ssim_topk: int = 8
    # membership inference (docs/score.md); set_distance runs whenever syn is given
    mia: bool = False
    mia_models: int = 2
    mia_shadows: int = 0
    mia_nonmembers: list[str] = field(default_factory=lambda: ["val", "test"])
    mia_unit: str = "auto"
    mia_epochs: int | None = None  # None: epochs
    mia_train_aug: str = "none"
    mia_bootstrap: int = 1000
    max_mia_auc: float | None = None
    max_mia_tpr: float | None = None
    allow_mismatch: bool = False


@dataclass
class MergeConfig:
    """Options of ``medcondense merge``."""

    inputs: list[str] = field(default_factory=list)
    output: str | None = None
    site_names: list[str] = field(default_factory=list)
    allow_mixed: bool = False
    overwrite: bool = False


@dataclass
class ExportConfig:
    """Options of ``medcondense export``."""

    input: str | None = None
    output: str | None = None
    formats: list[str] = field(default_factory=lambda: ["png"])
    stack: bool = False
    uid_root: str | None = None
    report: list[str] = field(default_factory=list)
    license: str = ""
    allow_real: bool = False
    overwrite: bool = False
    png_bits: int = 8


SECTIONS: dict[str, type] = {
    "ingest": IngestConfig,
    "distill": DistillConfig,
    "evaluate": EvaluateConfig,
    "score": ScoreConfig,
    "export": ExportConfig,
    "merge": MergeConfig,
}

C = TypeVar("C")


def resolve_workdir(workdir: str | None = None) -> Path:
    """The working directory for short forms: ``--workdir``, then ``$MEDCONDENSE_WORKDIR``, then ``.``."""
    return Path(workdir or os.environ.get(WORKDIR_ENV) or ".")


def default_data_path(workdir: str | None = None) -> Path:
    """Where ``ingest`` writes, and later stages read, when given no file name."""
    return resolve_workdir(workdir) / DEFAULT_DATA_FILE


def default_syn_name(method: str, ipc: int) -> str:
    """File name ``distill`` writes beside its input when given no ``-o``: ``syn_dsa_ipc10.h5``."""
    return f"syn_{method}_ipc{ipc}.h5"


def load_yaml_files(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Merge YAML config files (later files win), each a mapping of stage name -> options."""
    paths = list(paths)
    if not paths:
        return {}  # no yaml import: 50-70 ms of every command's start-up
    import yaml

    merged: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file ({exc.strerror})", path=path) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", path=path) from None
        if not isinstance(data, dict):
            raise ConfigError("a config file must be a mapping of stage -> options", path=path)
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"unknown section {section!r}; expected one of {', '.join(SECTIONS)}", path=path
                )
            if not isinstance(values, dict):
                raise ConfigError(f"section {section!r} must be a mapping", path=path)
            merged.setdefault(section, {}).update(values)
    return merged


def parse_set_options(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Parse ``--set stage.key=value`` items; values are read as YAML scalars (``10``, ``true``, ``[1,10]``)."""
    items = list(items)
    out: dict[str, dict[str, Any]] = {}
    if not items:
        return out
    import yaml

    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set expects stage.key=value (e.g. distill.ipc=10), got {item!r}")
        if section not in SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown stage {section!r}; expected one of {', '.join(SECTIONS)}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def _coerce(cls: type, name: str, value: Any, default: Any) -> Any:
    """Bring a YAML/CLI value to the type of the field's default, or explain why not."""
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (list, tuple)):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                value = [value]
            items = list(value)
            if default and not isinstance(default[0], str):
                items = [type(default[0])(v) for v in items]
            return type(default)(items)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(
        f"{cls.__name__.removesuffix('Config').lower()}.{name}: cannot use {value!r} "
        f"(expected a value like {default!r})"
    )


def build_config(
    cls: type[C],
    *,
    config_files: Iterable[str | Path] = (),
    set_options: Iterable[str] = (),
    **cli_values: Any,
) -> C:
    """Make a stage config: defaults < YAML files < ``--set`` < explicit CLI values (``None`` = not given)."""
    section = next(name for name, klass in SECTIONS.items() if klass is cls)
    defaults = cls()  # type: ignore[call-arg]
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    layers = [
        load_yaml_files(config_files).get(section, {}),
        parse_set_options(set_options).get(section, {}),
        {k: v for k, v in cli_values.items() if v is not None},
    ]
    values: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            if name not in known:
                raise ConfigError(
                    f"unknown option {section}.{name}; known: {', '.join(sorted(known))}"
                )
            values[name] = _coerce(cls, name, value, getattr(defaults, name))
    return dataclasses.replace(defaults, **values)  # type: ignore[type-var]


def explicit_options(
    cls: type,
    *,
    config_files: Iterable[str | Path] = (),
    set_options: Iterable[str] = (),
    **cli_values: Any,
) -> set[str]:
    """The option names a user gave in any layer (YAML, ``--set`` or the command line), as opposed
    to those left at their defaults; ``ingest --protocol`` refuses given options that contradict it."""
    section = next(name for name, klass in SECTIONS.items() if klass is cls)
    names = set(load_yaml_files(config_files).get(section, {}))
    names |= set(parse_set_options(set_options).get(section, {}))
    names |= {k for k, v in cli_values.items() if v is not None}
    return names


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a stage config (tuples become lists)."""
    return dataclasses.asdict(config)
