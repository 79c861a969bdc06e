"""``medcondense distill``: read a real set, distil it (DC/DSA/DM) or pick a coreset, write the result.

The stage in order: check the options, read and check the input (a real set with enough train
images in every class), resolve the hyper-parameters (``--preset`` and the reference defaults;
explicit options win), skip if the output already holds this exact run, then run the
:class:`~medcondense.distill.base.Engine` (or the coreset selection) and write the output
atomically. Images are distilled in standardized units (train-split mean/std of the input) and
written back in the input's units, so the synthetic file reads like the real one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medcondense import runkey, store
from medcondense.config import DistillConfig, config_to_dict
from medcondense.distill.base import (
    DataSpec,
    Engine,
    Hyperparameters,
    LoopState,
    Method,
    PrepareContext,
    RealSampler,
    checkpoint_path_for,
    initial_state,
    load_checkpoint,
    rebuild_method,
    state_from_checkpoint,
)
from medcondense.distill.registry import is_coreset, method_class, method_names
from medcondense.errors import ConfigError

log = logging.getLogger(__name__)

PRESETS = ("quick", "paper", "medmnist")
#: presets that only one method knows
METHOD_PRESETS = {"medmnist": "mtt"}
#: options only --method mtt reads (DistillConfig field -> option name)
MTT_OPTIONS = {
    "syn_steps": "--syn-steps", "expert_epochs": "--expert-epochs", "max_start_epoch": "--max-start-epoch",
    "lr_lr": "--lr-lr", "lr_teacher": "--lr-teacher", "batch_syn": "--batch-syn", "num_experts": "--num-experts",
    "train_epochs": "--train-epochs", "experts": "--experts", "unroll": "--unroll",
}
#: options only a DP run (--dp-epsilon) reads (DistillConfig field -> option name)
DP_OPTIONS = {
    "dp_delta": "--dp-delta", "dp_clip": "--dp-clip", "dp_unit": "--dp-unit", "dp_queries": "--dp-queries",
    "dp_accountant": "--dp-accountant",
}
INITS = ("real", "noise", "herding", "kcenter")
#: methods that take IDM's options (--factor, --net-queue)
FACTOR_METHODS = ("idm",)
SWITCHES = ("auto", "on", "off")
AMP_MODES = ("auto", "off", "bf16")
#: the method table entry of DM with differential privacy (``--method dm --dp-epsilon E``)
DP_METHOD = "dp-dm"
#: attributes of the input a DP output must not carry (they are computed from the train images)
DP_UNSAFE_ATTRS = ("preprocessing",)
#: at most this many [iteration, loss] points go into the output's attributes (HDF5 attrs are small)
MAX_CURVE_POINTS = 500


# --------------------------------------------------------------------------- options


def check_options(config: DistillConfig) -> None:
    """Raise ConfigError for option values that cannot work, naming the valid ones."""
    valid = method_names()
    if config.method not in valid:
        raise ConfigError(f"--method {config.method!r}: expected one of {', '.join(valid)}")
    if config.preset not in PRESETS:
        raise ConfigError(f"--preset {config.preset!r}: expected one of {', '.join(PRESETS)}")
    if METHOD_PRESETS.get(config.preset, config.method) != config.method:
        raise ConfigError(f"--preset {config.preset} is for --method {METHOD_PRESETS[config.preset]} only "
                          f"(the seed study's MTT values); use quick or paper with --method {config.method}")
    if config.method != "mtt":
        given = [option for name, option in MTT_OPTIONS.items() if getattr(config, name) is not None]
        if config.experts_only:
            given.append("--experts-only")
        if given:
            raise ConfigError(f"{', '.join(given)} apply to --method mtt only (not {config.method})")
    _check_dp_given(config)
    if config.init is not None and config.init not in INITS:
        raise ConfigError(f"--init {config.init!r}: expected one of {', '.join(INITS)}")
    if config.batch_classes not in SWITCHES:
        raise ConfigError(f"--batch-classes {config.batch_classes!r}: expected one of {', '.join(SWITCHES)}")
    if config.amp not in AMP_MODES:
        raise ConfigError(f"--amp {config.amp!r}: expected one of {', '.join(AMP_MODES)}")
    if config.compile not in SWITCHES:
        raise ConfigError(f"--compile {config.compile!r}: expected one of {', '.join(SWITCHES)}")
    _check_int("--ipc", config.ipc, 1)
    for name, value in (("--factor", config.factor), ("--net-queue", config.net_queue)):
        if value is not None:
            _check_int(name, value, 1)
            if config.method not in FACTOR_METHODS:
                raise ConfigError(f"{name} is an option of --method {', '.join(FACTOR_METHODS)}, not {config.method}")
    if config.init not in (None, "real") and is_coreset(config.method):
        raise ConfigError(f"--init {config.init} is for synthetic methods; {config.method} picks real images itself")
    for name, value, low in (
        ("--iterations", config.iterations, 0), ("--outer-loop", config.outer_loop, 1),
        ("--inner-loop", config.inner_loop, 0), ("--batch-real", config.batch_real, 1),
        ("--checkpoint-every", config.checkpoint_every, 0),
    ):
        if value is not None:
            _check_int(name, value, low)
    for name, value in (("--lr-img", config.lr_img), ("--lr-net", config.lr_net)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} {value!r}: expected a positive finite number")


def _check_dp_given(config: DistillConfig) -> None:
    """A DP option without --dp-epsilon, or --dp-epsilon with a coreset, is exit 2: either would
    write a set without the privacy the user asked for (an option left at its default cannot be
    told from one not given, and changes nothing)."""
    if config.dp_epsilon is None:
        defaults = {f.name: f.default for f in dataclasses.fields(DistillConfig)}
        given = [option for name, option in DP_OPTIONS.items() if getattr(config, name) != defaults[name]]
        if given:
            raise ConfigError(f"{', '.join(given)} apply only with --dp-epsilon E (with --method dm); "
                              "without it the set is not differentially private")
    elif is_coreset(config.method):
        raise ConfigError(f"--dp-epsilon works with --method dm only (got {config.method}): a coreset is real "
                          "images and cannot be differentially private")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} {value!r}: expected a whole number >= {low}")


def resolve_hyperparameters(config: DistillConfig, device: torch.device, laterality: bool) -> Hyperparameters:
    """The run's hyper-parameters: explicit options, else ``--preset``, else the reference defaults.

    The method resolves them itself (:meth:`~medcondense.distill.base.Method.resolve`).
    """
    return method_class(synthetic_method_name(config)).resolve(config, device, laterality)


def synthetic_method_name(config: DistillConfig) -> str:
    """The method table entry of a run: ``dp-dm`` for ``--method dm --dp-epsilon E``, else ``--method``."""
    if config.dp_epsilon is None:
        if config.method == DP_METHOD:
            raise ConfigError(f"--method {DP_METHOD} needs --dp-epsilon (or use --method dm --dp-epsilon E)")
        return config.method
    if config.method not in ("dm", DP_METHOD):
        raise ConfigError(f"--dp-epsilon works with --method dm only (got {config.method}): only DM's real side "
                          "is a statistic that can be released once with noise")
    return DP_METHOD


def check_dp_input(config: DistillConfig, real: store.ImageSet) -> tuple[Any, np.ndarray | None, int]:
    """The DP settings, the unit id of each train image (None = image units) and the unit count.

    Refuses (exit 2) a file normalised with train statistics and a delta that is not below 1 / units.
    """
    from medcondense.distill import dp
    from medcondense.distill.dpdm import settings_from_config

    settings = settings_from_config(config)
    method = (real.attrs.get("normalization") or {}).get("method")
    if method != "window":
        raise ConfigError(f"--dp-epsilon: the images were normalised with {method or 'unknown'} statistics of the "
                          "train split, so every stored image already depends on all train images",
                          path=config.input, hint="re-ingest with --normalize window")
    train = real.part(store.SPLIT_TRAIN)
    units = None
    if settings.unit == "patient":
        keys = train.meta.get("patient_key")
        if keys is None or not all(str(k) for k in keys):
            raise ConfigError("--dp-unit patient: the file records no patient_key for its train images",
                              path=config.input, hint="use --dp-unit image (image-level, not patient-level privacy)")
        units = np.asarray([str(k) for k in keys])
    count = train.n if units is None else int(np.unique(units).size)
    dp.check_settings(settings, units=count)
    return settings, units, count


# --------------------------------------------------------------------------- input


def load_real(path: str | Path, ipc: int) -> store.ImageSet:
    """Read the input and check that it is a real set that can give ``ipc`` train images per class."""
    image_set = store.read(path)
    store.require_kind(image_set, ("real",), path, "distill needs a real set from `medcondense ingest`")
    c, h, w = image_set.image_shape
    if h != w:
        raise ConfigError(f"images are {h}x{w}; distill needs square images (ingest with --size)", path=path)
    train = image_set.part(store.SPLIT_TRAIN)
    counts = np.bincount(train.labels, minlength=image_set.num_classes)
    empty = [image_set.class_names[k] for k in np.flatnonzero(counts == 0)]
    if len(empty) == image_set.num_classes:
        raise ConfigError("the set has no train images", path=path)
    if empty:  # a site without such patients (kept by a shared protocol, so files still merge)
        log.warning("class(es) %s have no train images here: kept in the class list, no images are "
                    "distilled for them", ", ".join(empty))
    short = [f"{image_set.class_names[k]} ({counts[k]})" for k in np.flatnonzero((counts < ipc) & (counts > 0))]
    if short:
        raise ConfigError(
            f"--ipc {ipc} is larger than the train images of class(es) {', '.join(short)}; "
            f"use --ipc {int(counts.min())} or less", path=path,
        )
    return image_set


def run_key_for(source_hash: str, hyperparameters: dict[str, Any]) -> str:
    """A digest of what decides the output: the input's content and the resolved hyper-parameters."""
    return runkey.run_key({"source": source_hash, "hp": hyperparameters})


def _summary_from_attrs(output: Path, attrs: dict[str, Any]) -> dict[str, Any]:
    curve = attrs.get("loss_curve") or []
    return {
        "method": attrs.get("method"), "ipc": attrs.get("ipc"), "kind": attrs.get("kind"),
        "num_images": attrs.get("n"), "content_hash": attrs.get("content_hash"),
        "source_hash": attrs.get("source_hash"), "final_loss": curve[-1][1] if curve else None,
    }


# --------------------------------------------------------------------------- run


def run(config: DistillConfig, *, hooks: Any = None) -> dict[str, Any]:
    """Run the distill stage; return a JSON-able summary (see :func:`render`).

    ``hooks`` (an :class:`~medcondense.distill.base.EngineHooks`) lets tests and tools watch or
    interrupt the loop. Under torchrun every rank runs this; rank 0 alone writes
    (docs/distributed.md).
    """
    from medcondense import distributed
    from medcondense.device import seed_everything

    started = time.time()
    check_options(config)
    if not config.input or not config.output:
        raise ConfigError("distill needs an input file and an output file")
    check_distributed(config)
    device = distributed.resolve_device(config.device)
    real = load_real(config.input, config.ipc)
    source_hash = str(real.attrs.get("content_hash") or store.content_hash(real))
    laterality = bool(real.attrs.get("laterality", True))
    output = Path(config.output)
    seed_everything(config.seed, config.deterministic)
    full_names = list(real.class_names)
    real, present = classes_with_train_images(real)
    check_class_shards(config, real.num_classes)
    private = None
    if not is_coreset(config.method) and config.dp_epsilon is not None:
        private = check_dp_input(config, real)
    group = distributed.join(device)  # every check above passed on every rank
    record = runkey.hdf5_record(_summary_from_attrs)
    if is_coreset(config.method):
        hp = _coreset_hyperparameters(config)
        run_key = run_key_for(source_hash, hp)
        group.on_main(lambda: runkey.skip_if_done(output, run_key, config.overwrite, record), "checking the output")
        result = group.on_main(lambda: _run_coreset(config, real, hp, device), "selecting the coreset")
    else:
        # rank 0 resolves (auto switches depend on the machine): every rank runs the same settings
        hp_obj = Hyperparameters(**group.broadcast(resolve_hyperparameters(config, device, laterality).to_dict()))
        hp = hp_obj.to_dict()
        if config.experts_only:
            return _prepare_only(config, real, hp_obj, source_hash, device, started)
        run_key = run_key_for(source_hash, hp)
        group.on_main(lambda: runkey.skip_if_done(output, run_key, config.overwrite, record), "checking the output")
        result = _run_synthetic(config, real, hp_obj, run_key, source_hash, device, hooks, private, group)
    write = lambda: _write_output(config, result, output, source_hash, hp, run_key, device, started, group,  # noqa: E731
                                  present, full_names)
    return group.on_main(write, "writing the output") or {}


def check_distributed(config: DistillConfig) -> None:
    """Under torchrun with several ranks: refuse what cannot be split (before the group starts,
    so every rank exits 2 the same way)."""
    from medcondense import distributed

    world = distributed.world_size()
    if world == 1 or is_coreset(config.method) or config.experts_only:
        return  # a coreset is picked on rank 0; MTT's experts go round-robin over the ranks
    cls = method_class(synthetic_method_name(config))
    if not getattr(cls, "supports_class_shards", False):
        reason = getattr(cls, "class_shards_refusal", "") or "it does not declare supports_class_shards"
        raise ConfigError(
            f"--method {config.method} cannot be split over {world} processes: {reason}; "
            "run it as one process (without torchrun, or --nproc_per_node 1)"
        )


def check_class_shards(config: DistillConfig, num_classes: int) -> None:
    """More ranks than classes (with train images) leaves a rank with nothing to compute: exit 2."""
    from medcondense import distributed

    world = distributed.world_size()
    if world > num_classes and not is_coreset(config.method) and not config.experts_only:
        raise ConfigError(
            f"{world} processes but only {num_classes} classes with train images: distill splits classes "
            f"over the processes; start at most {num_classes} (torchrun --nproc_per_node {num_classes})",
            path=config.input,
        )


def _write_output(config: DistillConfig, result: dict[str, Any], output: Path, source_hash: str, hp: dict,
                  run_key: str, device: torch.device, started: float, group: Any, present: np.ndarray,
                  full_names: list[str]) -> dict[str, Any]:
    """Rank 0: write the output file, drop the checkpoint, return the summary."""
    from medcondense.device import describe_device

    out_set = result.pop("image_set")
    out_set.labels = present[out_set.labels]  # back to the input's class indices
    out_set.class_names = full_names
    if result.get("dp") is not None:
        # DP: nothing computed from the private data but the released statistics' consequences
        out_set.attrs.update(method=config.method, ipc=config.ipc, hyperparameters=hp, dp=result["dp"],
                             provenance=_provenance(config, None, device, started, hp, result, group))
    else:
        out_set.attrs.update(
            method=config.method, ipc=config.ipc, source_hash=source_hash, hyperparameters=hp, run_key=run_key,
            provenance=_provenance(config, source_hash, device, started, hp, result, group),
        )
    digest = store.write(output, out_set, overwrite=True)
    checkpoint = checkpoint_path_for(output)
    checkpoint.unlink(missing_ok=True)  # the output is complete: the checkpoint has done its job
    wall = round(time.time() - started, 3)
    log.info("wrote %s (%d images, %s) in %.1f s", output, out_set.n, out_set.kind, wall)
    summary = {
        "output": str(output), "method": config.method, "ipc": config.ipc, "kind": out_set.kind,
        "num_images": out_set.n, "classes": list(out_set.class_names), "device": describe_device(device),
        **_decoded_count(out_set),
        "wall_time_s": wall, "content_hash": digest, "source_hash": source_hash, "hyperparameters": hp,
        **result,
    }
    if result.get("dp") is not None:
        summary["source_hash"] = None  # not in the file either; --json shows `units` (the file does not)
    if group.active:
        summary["world_size"] = group.world_size
    return summary


def _decoded_count(out_set: store.ImageSet) -> dict[str, int]:
    """``{"decoded_images": n * factor**2}`` for a factorised output (what a user trains on), else {}."""
    from medcondense.factorised import factor_of

    factor = factor_of(out_set.attrs)
    return {"decoded_images": out_set.n * factor * factor} if factor > 1 else {}


def _provenance(config: DistillConfig, source_hash: str | None, device: torch.device, started: float, hp: dict,
                result: dict, group: Any = None) -> dict:
    from medcondense.device import describe_device
    from medcondense.provenance import make_provenance

    extra = {"hyperparameters": hp, "resumed_from": result.get("resumed_from"),
             "seconds_per_iteration": result.get("seconds_per_iteration")}
    if group is not None and group.active:  # not in the run key: any world size makes the same images
        extra["distributed"] = group.describe()
    return make_provenance(
        stage="distill", config=config_to_dict(config), paths=[config.input, config.output],
        input_hash=source_hash, seed=config.seed, device=describe_device(device), started=started,
        extra=extra,
    )


def _standardized_train(real: store.ImageSet, device: torch.device, fixed: bool = False,
                        ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Train images standardized with the recorded train statistics, or (``fixed``, for DP) with
    data-independent constants."""
    from medcondense.train import standardize

    train = real.part(store.SPLIT_TRAIN)
    if fixed:
        from medcondense.distill import dp

        c = real.image_shape[0]
        mean, std = np.full(c, dp.FIXED_MEAN, np.float32), np.full(c, dp.FIXED_STD, np.float32)
    else:
        mean, std = real.normalization_stats()
    x = standardize(train.images, mean, std).to(device)
    y = torch.as_tensor(train.labels, dtype=torch.long, device=device)
    return x, y, mean, std


def _output_meta(real: store.ImageSet, n: int) -> dict[str, np.ndarray]:
    """Synthetic images carry only a spacing: the median of the real train images' spacing."""
    spacing = real.part(store.SPLIT_TRAIN).meta.get("spacing")
    if spacing is None or len(spacing) == 0:
        return {}
    median = np.median(np.asarray(spacing, dtype=np.float32), axis=0)
    return {"spacing": np.tile(median, (n, 1)).astype(np.float32)}


def classes_with_train_images(real: store.ImageSet) -> tuple[store.ImageSet, np.ndarray]:
    """The set restricted to the classes that have train images (relabelled 0..K-1), and the
    original index of each kept class; the set itself when every class has some."""
    counts = np.bincount(real.labels[real.split == store.SPLIT_TRAIN], minlength=real.num_classes)
    present = np.flatnonzero(counts > 0)
    if len(present) == real.num_classes:
        return real, present
    keep = np.isin(real.labels, present)
    subset = real.select(keep)
    subset.labels = np.searchsorted(present, subset.labels).astype(np.int64)
    subset.class_names = [real.class_names[k] for k in present]
    return subset, present


def _copied_attrs(real: store.ImageSet) -> dict[str, Any]:
    # ``sites``: which sites' patients the set was distilled from (merge names parts by it)
    keep = ("normalization", "preprocessing", "modality", "laterality", "burned_in_images", "sites")
    return {k: real.attrs[k] for k in keep if k in real.attrs}


def _prepare(method: Method, config: DistillConfig, real: store.ImageSet, x: torch.Tensor, y: torch.Tensor,
             source_hash: str) -> dict[str, Any]:
    """Let the method work on the real data before the loop (MTT: build or load its experts)."""
    from medcondense.console import progress

    context = PrepareContext(images=x, labels=y, source_hash=source_hash, class_names=list(real.class_names),
                             input=str(config.input), output=str(config.output), config=config, progress=progress)
    return method.prepare(context)


def _prepare_only(config: DistillConfig, real: store.ImageSet, hp: Hyperparameters, source_hash: str,
                  device: torch.device, started: float) -> dict[str, Any]:
    """``--experts-only``: the method's preparation (MTT's expert trajectories), no distillation."""
    from medcondense import distributed
    from medcondense.device import describe_device

    x, y, _, _ = _standardized_train(real, device)
    spec = DataSpec(channels=real.image_shape[0], image_size=real.image_shape[1], num_classes=real.num_classes)
    method = method_class(hp.method)(hp, spec, device)
    method.group = distributed.current()  # MTT's experts go round-robin over the ranks
    facts = _prepare(method, config, real, x, y, source_hash)
    return {"output": None, "method": config.method, "experts_only": True, "device": describe_device(device),
            "source_hash": source_hash, "wall_time_s": round(time.time() - started, 3), **facts}


def _init_syn(hp: Hyperparameters, sampler: RealSampler, spec: DataSpec, generator: torch.Generator,
              device: torch.device, method: Method | None = None) -> torch.Tensor:
    """Initial synthetic images: standard normal noise, or real images per class -- ``real``
    random ones, ``herding``/``kcenter`` the coreset's picks in a random ConvNet embedding --
    ``method.init_images_per_stored`` of them per stored image, encoded by the method (IDM: tiled)."""
    if hp.init == "noise":
        shape = (spec.num_classes * hp.ipc, spec.channels, spec.image_size, spec.image_size)
        return torch.randn(shape, generator=generator).to(device)
    per_stored = method.init_images_per_stored if method is not None else 1
    wanted = hp.ipc * per_stored
    if hp.init == "real":
        picks = [_fill(sampler.sample(c, wanted, generator), wanted) for c in range(spec.num_classes)]
    else:
        picks = _coreset_init(hp.init, sampler, wanted, generator)
    images = torch.cat(picks).detach().clone()
    return method.encode_init(images) if method is not None else images


def _fill(images: torch.Tensor, wanted: int) -> torch.Tensor:
    """``wanted`` images: ``images`` repeated in order when a class has fewer (never with factor 1,
    where load_real checked the counts)."""
    if images.shape[0] >= wanted or images.shape[0] == 0:  # a class without train images stays empty
        return images[:wanted]
    return images.repeat(-(-wanted // images.shape[0]), 1, 1, 1)[:wanted]


def _coreset_init(rule: str, sampler: RealSampler, wanted: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Per class, ``wanted`` real images in the order ``rule`` (herding, kcenter) picks them."""
    from medcondense.distill.coreset import select_coreset

    pools = sampler.images_by_class
    if any(p.shape[0] == 0 for p in pools):
        raise ConfigError(f"--init {rule} needs train images in every class; use --init real")
    images = torch.cat(pools)
    labels = torch.cat([torch.full((p.shape[0],), c, dtype=torch.long, device=p.device) for c, p in enumerate(pools)])
    take = min(wanted, min(p.shape[0] for p in pools))
    with torch.no_grad():
        index = select_coreset(rule, images, labels, take, net=None, generator=generator, num_classes=len(pools))
    return [_fill(images[part], wanted) for part in index.split(take)]


def _run_synthetic(
    config: DistillConfig, real: store.ImageSet, hp: Hyperparameters, run_key: str, source_hash: str,
    device: torch.device, hooks: Any, private: tuple[Any, np.ndarray | None, int] | None = None, group: Any = None,
) -> dict[str, Any]:
    from medcondense.console import progress
    from medcondense.train import destandardize

    x, y, mean, std = _standardized_train(real, device, fixed=private is not None)
    spec = DataSpec(channels=real.image_shape[0], image_size=real.image_shape[1], num_classes=real.num_classes)
    sampler = RealSampler([x[y == c] for c in range(spec.num_classes)])
    syn_labels = torch.arange(spec.num_classes, device=device).repeat_interleave(hp.ipc)
    from medcondense import distributed

    group = group or distributed.SINGLE
    method = method_class(hp.method)(hp, spec, device)
    method.group = group
    if private is not None:
        method.set_private_data(x, y.cpu().numpy(), private[1])
    checkpoint = checkpoint_path_for(config.output)
    # before any method state is made (DP-DM's release is a collective): all resume, or none
    _check_same_start(group, bool(config.resume and checkpoint.exists()), checkpoint, "resume from the checkpoint")
    state, resumed_from, method = _start_state(config, method, hp, sampler, spec, device, checkpoint, run_key, source_hash)
    method.group = group
    _check_same_start(group, state.iteration, checkpoint)
    facts = _prepare(method, config, real, x, y, source_hash)
    classes = group.mine(spec.num_classes) if group.active else None  # round-robin class shards
    engine = Engine(method, sampler, syn_labels, checkpoint=checkpoint, checkpoint_every=config.checkpoint_every,
                    run_key=run_key, source_hash=source_hash, hooks=hooks, config=config_to_dict(config),
                    classes=classes, group=group)
    shard = f"; rank {group.rank} of {group.world_size} computes classes {classes}" if group.active else ""
    log.info("distilling %s: %d classes x IPC %d, %d iterations (from %d) on %s; hyper-parameters %s%s",
             hp.method, spec.num_classes, hp.ipc, hp.iterations, state.iteration, device, _short_hp(hp), shard)
    t0 = time.time()
    with progress(f"distill {hp.method}", total=hp.iterations + 1 - state.iteration) as bar:
        final = engine.run(state, progress=bar)
    done = max(1, hp.iterations + 1 - state.iteration)
    images = destandardize(final.syn.detach(), mean, std).cpu().numpy()
    dp_attrs = None
    if private is not None:
        from medcondense.distill import dp

        dp_attrs = dp.attributes(private[0], method.sigma)
        meta, attrs = {}, _dp_safe_attrs(real)
    else:
        meta, attrs = _output_meta(real, images.shape[0]), _copied_attrs(real)
    image_set = store.ImageSet(
        images=images, labels=syn_labels.cpu().numpy(), split=np.zeros(images.shape[0], dtype=np.uint8),
        class_names=list(real.class_names), kind="synthetic", meta=meta,
        attrs={**attrs, "loss_curve": _thin_curve(final.loss_curve), **method.output_attrs()},
    )
    curve = final.loss_curve
    out = {
        **facts, **method.output_attrs(),
        "image_set": image_set, "iterations": hp.iterations, "resumed_from": resumed_from,
        "seconds_per_iteration": round((time.time() - t0) / done, 4),
        "loss_first": curve[0][1] if curve else None, "final_loss": curve[-1][1] if curve else None,
    }
    if dp_attrs is not None:
        out.update(dp=dp_attrs, units=private[2], dp_release=method.release_id)
    return out


def _dp_safe_attrs(real: store.ImageSet) -> dict[str, Any]:
    """What a DP output may copy from its input: modality, laterality and the normalisation *method*
    with the fixed standardisation constants (never the train mean/std or percentiles)."""
    from medcondense.distill import dp

    out = {k: real.attrs[k] for k in ("modality", "laterality") if k in real.attrs}
    c = real.image_shape[0]
    out["normalization"] = {"method": "window", "params": {}, "standardization": "fixed",
                            "mean": [dp.FIXED_MEAN] * c, "std": [dp.FIXED_STD] * c}
    return out


def _check_same_start(group: Any, start: Any, checkpoint: Path, what: str = "start from different iterations") -> None:
    """Every rank must start from the same iteration: a rank that cannot see rank 0's checkpoint
    (no shared file system) would start over and the ranks would fall out of step."""
    if group is None or not group.active:
        return
    starts = group.all_gather(start, "comparing the ranks' start")
    if len(set(starts)) > 1:
        raise ConfigError(
            f"the ranks would {what} {starts} (rank order): not every rank "
            "sees the same checkpoint; keep input, output and checkpoint on a file system all nodes share",
            path=checkpoint,
        )


def _start_state(config, method, hp, sampler, spec, device, checkpoint, run_key, source_hash) -> tuple[LoopState, int | None, Method]:
    """A fresh state (seeded generator, initial images) or, with ``--resume``, the checkpoint's
    state and the method rebuilt from it."""
    if config.resume and checkpoint.exists():
        payload = load_checkpoint(checkpoint, run_key, source_hash)
        log.info("resuming from %s at iteration %d", checkpoint, payload["iteration"])
        return state_from_checkpoint(payload, device), int(payload["iteration"]), rebuild_method(payload, spec, device)
    if config.resume:
        log.warning("--resume: no checkpoint at %s; starting from the beginning", checkpoint)
    elif checkpoint.exists():
        log.warning("an earlier checkpoint %s exists; starting over (pass --resume to continue it)", checkpoint)
    generator = torch.Generator().manual_seed(hp.seed)
    syn = _init_syn(hp, sampler, spec, generator, device, method)
    method.init_state(syn, generator)  # the method's own state draws after the images, from the same generator
    return initial_state(syn, generator, method.state_dict()), None, method


def _short_hp(hp: Hyperparameters) -> str:
    if not method_class(hp.method).uses_real_batches:  # e.g. MTT: its own settings say more
        return ", ".join([f"lr_img={hp.lr_img}", f"aug={hp.aug}", f"amp={hp.amp}", f"compile={hp.compile}",
                          *(f"{k}={v}" for k, v in hp.extra.items())])
    keys = ("lr_img", "batch_real", "outer_loop", "inner_loop", "aug", "batch_classes", "amp", "compile")
    return ", ".join(f"{k}={getattr(hp, k)}" for k in keys)


def _thin_curve(curve: list[list[float]]) -> list[list[float]]:
    """At most :data:`MAX_CURVE_POINTS` evenly spaced points, always keeping the last."""
    if len(curve) <= MAX_CURVE_POINTS:
        return [[int(i), float(v)] for i, v in curve]
    step = -(-len(curve) // MAX_CURVE_POINTS)
    picked = curve[::step]
    if picked[-1] is not curve[-1]:
        picked.append(curve[-1])
    return [[int(i), float(v)] for i, v in picked]


# --------------------------------------------------------------------------- coresets


def _coreset_hyperparameters(config: DistillConfig) -> dict[str, Any]:
    return {"method": config.method, "ipc": config.ipc, "seed": config.seed,
            "net": {"name": "convnet", "width": 128, "depth": 3, "norm": "instancenorm"}}


def _run_coreset(config: DistillConfig, real: store.ImageSet, hp: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Pick ``ipc`` real train images per class (random, herding or k-center in a ConvNet embedding)."""
    from medcondense.distill.coreset import select_coreset
    from medcondense.nets import build_net

    x, y, _, _ = _standardized_train(real, device)
    torch.manual_seed(config.seed)
    net_cfg = dict(hp["net"])
    net = build_net(net_cfg.pop("name"), real.image_shape[0], real.num_classes, real.image_shape[1], **net_cfg).to(device)
    net.eval()
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        index = select_coreset(config.method, x, y, config.ipc, net=net, generator=generator, num_classes=real.num_classes)
    index = np.sort(np.asarray(torch.as_tensor(index).cpu(), dtype=np.int64))
    train = real.part(store.SPLIT_TRAIN)
    subset = train.select(index)
    order = np.argsort(subset.labels, kind="stable")  # class order, like a synthetic set
    subset = subset.select(order)
    subset.kind = "subset"
    subset.attrs = _copied_attrs(real)
    return {"image_set": subset, "iterations": 0, "resumed_from": None}


# --------------------------------------------------------------------------- output


def render(result: dict[str, Any], console: Any) -> None:
    """The result as a small table on stdout."""
    from rich.table import Table

    table = Table(title="medcondense distill", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    if result.get("skipped"):
        table.add_row("status", "up to date (same input and options); --overwrite to redo")
    experts = result.get("experts") or {}
    if experts:
        how = "trained now" if experts.get("built") else "reused"
        table.add_row("experts", f"{experts.get('path')} ({experts.get('num_experts')} x {experts.get('train_epochs')} epochs, {how})")
    if result.get("experts_only"):
        table.add_row("status", "expert trajectories ready (--experts-only: nothing distilled)")
    rows = [
        ("output", result.get("output")), ("method", result.get("method")), ("kind", result.get("kind")),
        ("ipc", result.get("ipc")), ("images", result.get("num_images")),
        ("images decoded (factorised)", result.get("decoded_images")), ("device", result.get("device")),
        ("iterations", result.get("iterations")), ("resumed from", result.get("resumed_from")),
        ("loss first -> last", _loss_text(result)), ("learned lr", result.get("learned_lr")),
        ("s / iteration", result.get("seconds_per_iteration")),
        ("wall time s", result.get("wall_time_s")),
    ]
    for name, value in rows:
        if value is not None:
            table.add_row(name, str(value))
    console.print(table)


def _loss_text(result: dict[str, Any]) -> str | None:
    first, last = result.get("loss_first"), result.get("final_loss")
    if first is None or last is None:
        return None
    return f"{first:.4f} -> {last:.4f}"
