"""``medcondense evaluate``: train fresh networks on a (distilled) set, test them on real data.

For every input set, K fresh networks (``--models``, default 5; model k is seeded with
``seed + k``) are trained from scratch and tested on the real file's test split (or on one site's
test images with ``--test-site``). The same is done, in the same report, for two baselines:
a random real subset with the input's images per class (``random``; model k gets its own subset,
drawn with ``seed + k``) and the full real train split (``full``). "Recovery" is input / full.

Protocol (the reference's ``evaluate_synset``): SGD lr 0.01, momentum 0.9, weight decay 5e-4,
batch 256, lr x0.1 at half the epochs; 300 epochs, or 1000 with ``--train-aug dsa`` (one DSA op
per batch, parameters drawn per image, as the reference trains evaluation nets); ``--epochs``
overrides both. Every image (input and real) is standardized with the REAL file's train-split
statistics. The ``full`` baseline has its own budget because 300 epochs over a whole hospital
archive is far too slow on a CPU: it trains ``min(epochs, ceil(full_steps / batches_per_epoch))``
epochs (``full_steps`` = 1000 SGD steps by default, ``--set evaluate.full_steps=N``), so it always
runs about ``full_steps`` steps whatever the data size; the report records what was used.
Baselines are cached in ``<real>.baselines.json`` (beside the real file, written atomically),
keyed by the real content hash and every option that changes their result, so they are trained once.

Report keys (``--json`` prints it, ``-o`` writes it; docs/evaluate.md is the long form)::

    real        {file, content_hash, class_names, test_images, test_site}
    protocol    {arch, models, epochs, train_aug, aug_ops, lr, momentum, weight_decay,
                 batch_size, seed, device, full_baseline: {epochs, step_budget, steps}}
    results     one per input:
                {file, kind, method, ipc, train_images, content_hash,
                 metrics: {accuracy, balanced_accuracy, auc: {mean, std, values},
                           per_class_recall: {mean: [...], std: [...]}},
                 baselines: {random: <metrics + ipc>, full: <metrics>},   (those asked for)
                 recovery: {accuracy, balanced_accuracy, auc}             (input mean / full mean)}
    output      the report path (or null); plot: the PNG path (or null)
    run_key     hash of the inputs and options (a rerun with the same key is skipped)
    provenance  tool and library versions, redacted command line, config, wall time

A baseline block has the same ``metrics`` layout plus ``epochs``, ``train_images`` and ``cached``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medcondense import metrics, store
from medcondense.atomic import atomic_path, write_json
from medcondense.config import EvaluateConfig, config_to_dict
from medcondense.errors import AlreadyDone, ConfigError, DataMismatchError, RuntimeFailure, ShapeMismatch
from medcondense.nets import NETS, build_net
from medcondense.train import Augment, TrainSettings, predict_proba, standardize, train_classifier

log = logging.getLogger(__name__)

TRAIN_AUGS = ("none", "dsa")
BASELINES = ("random", "full")
DEFAULT_EPOCHS = 300
DSA_EPOCHS = 1000
CACHE_SCHEMA = "medcondense-baselines/1"
CACHE_SUFFIX = ".baselines.json"


# --------------------------------------------------------------------------- training + testing


def train_augment(name: str, laterality: bool) -> Augment | None:
    """The ``augment`` for :func:`evaluate_images`: ``None`` for ``none``, DSA ops for ``dsa``.

    DSA leaves out ``flip`` when the data's laterality matters.
    """
    if name == "none":
        return None
    if name == "dsa":
        from medcondense.augment import SiameseAugment, default_ops

        return SiameseAugment(default_ops(laterality)).random_batch
    raise ConfigError(f"--train-aug {name!r}: expected one of {', '.join(TRAIN_AUGS)}")


def _train_and_test_one(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: np.ndarray,
    *,
    arch: str,
    num_classes: int,
    settings: TrainSettings,
    augment: Augment | None,
    seed: int,
) -> dict[str, Any]:
    """Train one fresh net (weights and batch order from ``seed``) and measure it on the test set."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net(arch, train_x.shape[1], num_classes, train_x.shape[-1]).to(train_x.device)
    generator = torch.Generator().manual_seed(seed)
    try:
        train_classifier(net, train_x, train_y, settings, augment=augment, generator=generator)
        proba = predict_proba(net, test_x)
    except torch.OutOfMemoryError:
        raise RuntimeFailure(
            f"out of memory while training a {arch} on {train_x.shape[0]} images",
            hint="lower --set evaluate.batch_size=..., or use --device cpu",
        ) from None
    return metrics.classification_metrics(test_y, proba, num_classes)


def evaluate_images(
    train_x: torch.Tensor | np.ndarray,
    train_y: torch.Tensor | np.ndarray,
    test_x: torch.Tensor | np.ndarray,
    test_y: torch.Tensor | np.ndarray,
    *,
    arch: str = "convnet",
    models: int = 5,
    settings: TrainSettings | None = None,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    num_classes: int | None = None,
    on_model_done: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train ``models`` fresh nets on standardized train images, test each on the test images.

    Parameters
    ----------
    train_x, test_x : standardized images [N, C, H, W] (tensors or arrays; moved to ``device``)
    train_y, test_y : integer labels [N]
    arch : a :data:`medcondense.nets.NETS` name
    models : number of fresh networks; model k uses seed ``seed + k`` for weights and batch order
    settings : training hyper-parameters (default: the reference's, 300 epochs)
    augment : training-time augmentation ``f(batch, generator)``, e.g. :func:`train_augment`
    device : where to train
    num_classes : number of classes (default: ``max(label) + 1`` over train and test)
    on_model_done : called after each model (progress bars)

    Returns
    -------
    dict
        ``{accuracy, balanced_accuracy, auc: {mean, std, values}, per_class_recall: {mean, std},
        models, epochs, train_images}`` (see :func:`medcondense.metrics.summarize`).
    """
    if models < 1:
        raise ConfigError(f"--models must be at least 1, got {models}")
    settings = settings or TrainSettings()
    device = torch.device(device)
    tx = torch.as_tensor(train_x, dtype=torch.float32).to(device)
    ty = torch.as_tensor(train_y, dtype=torch.long).to(device)
    vx = torch.as_tensor(test_x, dtype=torch.float32).to(device)
    vy = np.asarray(torch.as_tensor(test_y).cpu().numpy(), dtype=np.int64)
    if num_classes is None:
        num_classes = int(max(ty.max().item(), vy.max(initial=0))) + 1
    runs = []
    for k in range(models):
        runs.append(_train_and_test_one(
            tx, ty, vx, vy, arch=arch, num_classes=num_classes, settings=settings, augment=augment, seed=seed + k,
        ))
        if on_model_done is not None:
            on_model_done()
    return {**metrics.summarize(runs), "models": models, "epochs": settings.epochs, "train_images": int(tx.shape[0])}


def _combine_single_runs(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge K one-model results (each from its own train set) into one K-model summary."""
    runs = []
    for block in blocks:
        runs.append({
            **{name: block[name]["values"][0] for name in metrics.SCALAR_METRICS},
            "per_class_recall": block["per_class_recall"]["mean"],
        })
    summary = metrics.summarize(runs)
    return {**summary, "models": len(blocks), "epochs": blocks[0]["epochs"], "train_images": blocks[0]["train_images"]}


# --------------------------------------------------------------------------- loading and checks


@dataclass
class RealData:
    """The judge: the real file's standardized train split and (site-filtered) test split."""

    path: str
    image_set: store.ImageSet
    content_hash: str
    mean: np.ndarray
    std: np.ndarray
    train_x: torch.Tensor
    train_y: np.ndarray
    test_x: torch.Tensor
    test_y: np.ndarray

    @property
    def class_names(self) -> list[str]:
        return self.image_set.class_names


def _known_sites(image_set: store.ImageSet) -> list[str]:
    sites = image_set.meta.get("site")
    return [] if sites is None else sorted({str(s) for s in sites if str(s)})


def _test_mask(image_set: store.ImageSet, test_site: str | None, path: str) -> np.ndarray:
    mask = image_set.split == store.SPLIT_TEST
    if test_site is None:
        return mask
    known = _known_sites(image_set)
    if not known:
        raise ConfigError(f"--test-site {test_site!r}: the file records no site for its images", path=path)
    if test_site not in known:
        raise ConfigError(f"--test-site {test_site!r}: unknown site; known sites: {', '.join(known)}", path=path)
    mask = mask & (image_set.meta["site"].astype(str) == test_site)
    if not mask.any():
        raise DataMismatchError(f"--test-site {test_site!r}: the test split has no image from this site", path=path)
    return mask


def load_real(path: str | Path, test_site: str | None = None) -> RealData:
    """Read and check the real file: kind ``real``, a test split, a known ``test_site``."""
    path = str(path)
    image_set = store.read(path)
    if image_set.kind != "real":
        raise DataMismatchError(
            f"is a {image_set.kind} set; --real needs the real data set (kind real) whose test split judges",
            path=path,
        )
    if not (image_set.split == store.SPLIT_TEST).any():
        raise DataMismatchError("has no test split to evaluate on (re-ingest with a test fraction > 0)", path=path)
    train_mask = image_set.split == store.SPLIT_TRAIN
    if not train_mask.any():
        raise DataMismatchError("has no train split (needed for the statistics and the baselines)", path=path)
    test_mask = _test_mask(image_set, test_site, path)
    mean, std = image_set.normalization_stats()
    return RealData(
        path=path,
        image_set=image_set,
        content_hash=image_set.attrs.get("content_hash") or store.content_hash(image_set),
        mean=mean,
        std=std,
        train_x=standardize(image_set.images[train_mask], mean, std),
        train_y=image_set.labels[train_mask],
        test_x=standardize(image_set.images[test_mask], mean, std),
        test_y=image_set.labels[test_mask],
    )


@dataclass
class InputSet:
    """One set to judge, standardized with the real statistics."""

    path: str
    kind: str
    method: str
    ipc: int
    content_hash: str
    train_x: torch.Tensor
    train_y: np.ndarray


def _images_per_class(labels: np.ndarray) -> int:
    return int(np.bincount(labels).max()) if labels.size else 0


def check_matches_real(image_set: store.ImageSet, real: store.ImageSet, path: str | Path) -> None:
    """Raise ShapeMismatch / DataMismatchError unless ``image_set`` has the real set's image
    shape and class names (a set to judge, score or compare against it)."""
    if image_set.image_shape != real.image_shape:
        raise ShapeMismatch(
            "images (C, H, W) differ from the real set's", expected=real.image_shape,
            got=image_set.image_shape, path=path,
        )
    if list(image_set.class_names) != list(real.class_names):
        raise DataMismatchError(
            f"class names {image_set.class_names} do not match the real set's {real.class_names}", path=path
        )


def load_input(path: str | Path, real: RealData) -> InputSet:
    """Read a set to judge and check it fits the real file (image shape, class names).

    Synthetic and subset files are used whole; a real file contributes its train split.
    """
    path = str(path)
    image_set = store.read(path)
    check_matches_real(image_set, real.image_set, path)
    if image_set.kind == "real":
        image_set = image_set.part(store.SPLIT_TRAIN)
    if image_set.n == 0:
        raise DataMismatchError("has no images to train on", path=path)
    ipc = image_set.attrs.get("ipc")
    return InputSet(
        path=path,
        kind=image_set.kind,
        method=str(image_set.attrs.get("method") or image_set.kind),
        ipc=int(ipc) if ipc else _images_per_class(image_set.labels),
        content_hash=image_set.attrs.get("content_hash") or store.content_hash(image_set),
        train_x=standardize(image_set.images, real.mean, real.std),
        train_y=image_set.labels,
    )


# --------------------------------------------------------------------------- baselines + cache


def random_subset(labels: np.ndarray, ipc: int, seed: int) -> np.ndarray:
    """Indices of ``ipc`` random images per class (all of a class that has fewer)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked.append(rng.choice(members, size=min(ipc, members.size), replace=False))
    return np.sort(np.concatenate(picked))


def full_baseline_epochs(train_images: int, epochs: int, batch_size: int, step_budget: int) -> int:
    """Epochs for the full baseline: about ``step_budget`` SGD steps, never more than ``epochs``."""
    batches = max(1, math.ceil(train_images / batch_size))
    return max(1, min(epochs, math.ceil(step_budget / batches)))


class BaselineCache:
    """``<real>.baselines.json``: baseline results keyed by a hash of what determines them."""

    def __init__(self, real_path: str | Path):
        real_path = Path(real_path)
        self.path = real_path.with_name(real_path.name + CACHE_SUFFIX)
        self.entries: dict[str, Any] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("schema") == CACHE_SCHEMA:
                    self.entries = dict(data.get("entries", {}))
            except (OSError, ValueError, AttributeError):
                log.warning("%s: unreadable baseline cache, it will be rebuilt", self.path)

    @staticmethod
    def key(params: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, params: dict[str, Any]) -> dict[str, Any] | None:
        entry = self.entries.get(self.key(params))
        return None if entry is None else entry.get("result")

    def put(self, params: dict[str, Any], result: dict[str, Any]) -> None:
        """Store a result and rewrite the file atomically (a read-only folder only warns)."""
        self.entries[self.key(params)] = {"params": params, "result": result}
        try:
            write_json(self.path, {"schema": CACHE_SCHEMA, "entries": self.entries}, indent=1)
        except OSError as exc:
            log.warning("%s: could not write the baseline cache (%s)", self.path, exc)


# --------------------------------------------------------------------------- the stage


@dataclass
class _Plan:
    """Resolved options shared by every evaluation of one run."""

    arch: str
    models: int
    settings: TrainSettings
    train_aug: str
    augment: Augment | None
    aug_ops: list[str]
    device: torch.device
    seed: int
    full_steps: int
    test_site: str | None


def _check_config(config: EvaluateConfig) -> None:
    if not config.inputs:
        raise ConfigError("give at least one set to evaluate")
    if config.models < 1:
        raise ConfigError(f"--models must be at least 1, got {config.models}")
    if config.epochs is not None and config.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {config.epochs}")
    if config.arch not in NETS:
        raise ConfigError(f"--arch {config.arch!r}: expected one of {', '.join(NETS)}")
    if config.train_aug not in TRAIN_AUGS:
        raise ConfigError(f"--train-aug {config.train_aug!r}: expected one of {', '.join(TRAIN_AUGS)}")
    unknown = [b for b in config.baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"--baselines {','.join(unknown)}: expected a comma list of {', '.join(BASELINES)} or none")
    if config.batch_size < 1 or config.full_steps < 1 or config.lr <= 0:
        raise ConfigError("batch_size and full_steps must be at least 1 and lr positive")


def _make_plan(config: EvaluateConfig, real: RealData) -> _Plan:
    from medcondense.device import resolve_device

    epochs = config.epochs or (DSA_EPOCHS if config.train_aug == "dsa" else DEFAULT_EPOCHS)
    laterality = bool(real.image_set.attrs.get("laterality", True))
    aug_ops: list[str] = []
    if config.train_aug == "dsa":
        from medcondense.augment import default_ops

        aug_ops = default_ops(laterality)
    return _Plan(
        arch=config.arch,
        models=config.models,
        settings=TrainSettings(epochs=epochs, lr=config.lr, batch_size=config.batch_size),
        train_aug=config.train_aug,
        augment=train_augment(config.train_aug, laterality),
        aug_ops=aug_ops,
        device=resolve_device(config.device),
        seed=config.seed,
        full_steps=config.full_steps,
        test_site=config.test_site,
    )


def _evaluate(plan: _Plan, real: RealData, x: torch.Tensor, y: np.ndarray, *, settings=None, seed=None, models=None, tick=None):
    return evaluate_images(
        x, y, real.test_x, real.test_y, arch=plan.arch, models=models or plan.models,
        settings=settings or plan.settings, augment=plan.augment, device=plan.device,
        seed=plan.seed if seed is None else seed, num_classes=len(real.class_names), on_model_done=tick,
    )


def _baseline_params(plan: _Plan, real: RealData, name: str, ipc: int | None) -> dict[str, Any]:
    s = plan.settings
    return {
        "real": real.content_hash, "baseline": name, "ipc": ipc, "arch": plan.arch, "epochs": s.epochs,
        "models": plan.models, "seed": plan.seed, "train_aug": plan.train_aug, "lr": s.lr,
        "batch_size": s.batch_size, "test_site": plan.test_site,
        "full_steps": plan.full_steps if name == "full" else None,
    }


def _random_baseline(plan: _Plan, real: RealData, ipc: int, tick) -> dict[str, Any]:
    blocks = []
    for k in range(plan.models):
        idx = random_subset(real.train_y, ipc, plan.seed + k)
        blocks.append(_evaluate(plan, real, real.train_x[idx], real.train_y[idx], seed=plan.seed + k, models=1, tick=tick))
    return {**_combine_single_runs(blocks), "ipc": ipc}


def _full_baseline(plan: _Plan, real: RealData, tick) -> dict[str, Any]:
    epochs = full_baseline_epochs(len(real.train_y), plan.settings.epochs, plan.settings.batch_size, plan.full_steps)
    return _evaluate(plan, real, real.train_x, real.train_y, settings=replace(plan.settings, epochs=epochs), tick=tick)


def _cached(cache: BaselineCache, params: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    hit = cache.get(params)
    if hit is not None:
        log.info("baseline %s (ipc %s): from the cache %s", params["baseline"], params["ipc"], cache.path)
        return {**hit, "cached": True}
    result = compute()
    cache.put(params, result)
    return {**result, "cached": False}


def _baselines(
    plan: _Plan, real: RealData, cache: BaselineCache, ipcs: list[int], which: list[str] | tuple[str, ...], tick,
) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """The full baseline (or None) and the random baseline of every IPC, from the cache when there."""
    full = None
    if "full" in which:
        full = _cached(cache, _baseline_params(plan, real, "full", None), lambda: _full_baseline(plan, real, tick))
    randoms = {}
    if "random" in which:
        for ipc in ipcs:
            randoms[ipc] = _cached(cache, _baseline_params(plan, real, "random", ipc),
                                   lambda ipc=ipc: _random_baseline(plan, real, ipc, tick))
    return full, randoms


def real_baselines(
    real: RealData,
    *,
    ipcs: list[int],
    models: int,
    epochs: int,
    full_steps: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
    arch: str = "convnet",
    which: tuple[str, ...] = BASELINES,
    tick: Callable[[], None] | None = None,
) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    """Random-subset (per IPC) and full-train-split accuracies of a real file, trained once.

    The same numbers, with the same cache (``<real>.baselines.json``), as ``evaluate``'s
    baselines under the same options: ``score`` builds the paper's indicator from them, so a
    pipeline that runs both stages with matching settings trains each baseline only once.
    Returns ``(full, {ipc: random})`` in :func:`evaluate_images`' summary layout.
    """
    plan = _Plan(
        arch=arch, models=models, settings=TrainSettings(epochs=epochs), train_aug="none", augment=None,
        aug_ops=[], device=torch.device(device), seed=seed, full_steps=full_steps, test_site=None,
    )
    return _baselines(plan, real, BaselineCache(real.path), list(ipcs), which, tick or (lambda: None))


def _metrics_block(summary: dict[str, Any]) -> dict[str, Any]:
    return {name: summary[name] for name in (*metrics.SCALAR_METRICS, "per_class_recall")}


def _baseline_block(summary: dict[str, Any]) -> dict[str, Any]:
    extra = {k: summary[k] for k in ("ipc", "epochs", "train_images", "models", "cached") if k in summary}
    return {"metrics": _metrics_block(summary), **extra}


def _recovery(result: dict[str, Any], full: dict[str, Any] | None) -> dict[str, Any] | None:
    if full is None:
        return None
    return {name: metrics.ratio(result[name]["mean"], full[name]["mean"]) for name in metrics.SCALAR_METRICS}


def _run_key(config: EvaluateConfig, real: RealData, inputs: list[InputSet]) -> str:
    options = {k: v for k, v in config_to_dict(config).items() if k not in ("inputs", "real", "output", "plot", "overwrite", "device")}
    payload = {"real": real.content_hash, "inputs": [i.content_hash for i in inputs], "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _check_output(config: EvaluateConfig, run_key: str) -> None:
    """Skip a finished identical run; refuse to replace another report without ``--overwrite``."""
    if not config.output or config.overwrite or not Path(config.output).exists():
        return
    try:
        previous = json.loads(Path(config.output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and previous.get("run_key") == run_key:
        raise AlreadyDone(config.output, previous)
    raise ConfigError("exists (from other inputs or options); pass --overwrite to replace it", path=config.output)


def _plot_path(config: EvaluateConfig) -> str | None:
    if config.plot:
        return config.plot
    if config.output and len(config.inputs) > 1:
        return str(Path(config.output).with_suffix(".png"))
    return None


def run(config: EvaluateConfig) -> dict[str, Any]:
    """Evaluate every input against the real test split and the baselines; return the report."""
    from medcondense.console import progress
    from medcondense.device import describe_device
    from medcondense.provenance import make_provenance

    started = time.time()
    _check_config(config)
    real = load_real(config.real, config.test_site)
    inputs = [load_input(p, real) for p in config.inputs]
    run_key = _run_key(config, real, inputs)
    _check_output(config, run_key)
    plan = _make_plan(config, real)
    cache = BaselineCache(config.real)
    ipcs = sorted({i.ipc for i in inputs})
    total = plan.models * (len(inputs) + len(ipcs) * ("random" in config.baselines) + ("full" in config.baselines))
    log.info("evaluating %d set(s) with %d %s net(s) each, %d epochs, on %s",
             len(inputs), plan.models, plan.arch, plan.settings.epochs, describe_device(plan.device))
    with progress("evaluate", total=total) as bar:
        full, randoms = _baselines(plan, real, cache, ipcs, config.baselines, bar.advance)
        results = []
        for item in inputs:
            bar.update(status=Path(item.path).name)
            summary = _evaluate(plan, real, item.train_x, item.train_y, tick=bar.advance)
            baselines = {}
            if item.ipc in randoms:
                baselines["random"] = _baseline_block(randoms[item.ipc])
            if full is not None:
                baselines["full"] = _baseline_block(full)
            results.append({
                "file": item.path, "kind": item.kind, "method": item.method, "ipc": item.ipc,
                "train_images": summary["train_images"], "content_hash": item.content_hash,
                "metrics": _metrics_block(summary), "baselines": baselines, "recovery": _recovery(summary, full),
            })
    full_epochs = full_baseline_epochs(len(real.train_y), plan.settings.epochs, plan.settings.batch_size, plan.full_steps)
    report = {
        "real": {
            "file": real.path, "content_hash": real.content_hash, "class_names": real.class_names,
            "test_images": int(len(real.test_y)), "test_site": config.test_site,
        },
        "protocol": {
            "arch": plan.arch, "models": plan.models, "epochs": plan.settings.epochs, "train_aug": plan.train_aug,
            "aug_ops": plan.aug_ops, "lr": plan.settings.lr, "momentum": plan.settings.momentum,
            "weight_decay": plan.settings.weight_decay, "batch_size": plan.settings.batch_size,
            "seed": plan.seed, "device": describe_device(plan.device),
            "full_baseline": {
                "epochs": full_epochs, "step_budget": plan.full_steps,
                "steps": full_epochs * max(1, math.ceil(len(real.train_y) / plan.settings.batch_size)),
            },
        },
        "results": results,
        "output": config.output,
        "plot": _plot_path(config),
        "run_key": run_key,
    }
    report["provenance"] = make_provenance(
        stage="evaluate", config=config_to_dict(config), paths=[*config.inputs, config.real],
        input_hash=run_key, seed=config.seed, device=describe_device(plan.device), started=started,
    )
    if report["plot"]:
        write_plot(report, report["plot"])
    if config.output:
        write_json(config.output, report)
    return report


# --------------------------------------------------------------------------- presentation


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """Accuracy vs IPC: one line per method (mean ± std), the random baseline, the full level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in results}):
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["ipc"])
        acc = [r["metrics"]["accuracy"] for r in rows]
        ax.errorbar([r["ipc"] for r in rows], [a["mean"] for a in acc], yerr=[a["std"] for a in acc],
                    marker="o", capsize=3, label=method)
    randoms = {r["ipc"]: r["baselines"]["random"]["metrics"]["accuracy"] for r in results if "random" in r["baselines"]}
    if randoms:
        ipcs = sorted(randoms)
        ax.errorbar(ipcs, [randoms[i]["mean"] for i in ipcs], yerr=[randoms[i]["std"] for i in ipcs],
                    marker="s", linestyle="--", color="grey", capsize=3, label="random real")
    fulls = [r["baselines"]["full"]["metrics"]["accuracy"]["mean"] for r in results if "full" in r["baselines"]]
    if fulls:
        ax.axhline(fulls[0], color="black", linestyle=":", label="full train split")
    ax.set_xscale("log")
    ax.set_xlabel("images per class")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{report['protocol']['arch']}, {report['protocol']['models']} models")
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)


def _pm(block: dict[str, Any] | None) -> str:
    if not block or block.get("mean") is None:
        return "-"
    return f"{100 * block['mean']:.1f}±{100 * block['std']:.1f}"


def _baseline_rows(results: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Distinct baselines of a report: random per IPC (ascending), then full."""
    randoms = {r["baselines"]["random"]["ipc"]: r["baselines"]["random"] for r in results if "random" in r["baselines"]}
    rows = [("random", randoms[ipc]) for ipc in sorted(randoms)]
    fulls = [r["baselines"]["full"] for r in results if "full" in r["baselines"]]
    return rows + ([("full", fulls[0])] if fulls else [])


def render(result: dict[str, Any], console) -> None:
    """The report as rich tables: the inputs, the baselines, and per-class recall."""
    from rich.table import Table

    protocol, real = result["protocol"], result["real"]
    site = f" of site {real['test_site']}" if real.get("test_site") else ""
    # Three narrow tables rather than one wide one: readable in an 80-column terminal.
    table = Table(title=f"evaluate: {protocol['arch']} x{protocol['models']}, {protocol['epochs']} epochs, "
                        f"tested on {real['test_images']} real images{site}")
    for column in ("set", "method", "ipc", "acc %", "bal. acc %", "AUC %", "recovery"):
        table.add_column(column, justify="left" if column in ("set", "method") else "right",
                         no_wrap=column not in ("set", "method"))
    for r in result["results"]:
        recovery = (r.get("recovery") or {}).get("accuracy")
        table.add_row(
            Path(r["file"]).name, r["method"], str(r["ipc"]), _pm(r["metrics"]["accuracy"]),
            _pm(r["metrics"]["balanced_accuracy"]), _pm(r["metrics"]["auc"]),
            f"{100 * recovery:.0f} %" if recovery is not None else "-",
        )
    console.print(table)
    rows = _baseline_rows(result["results"])
    if rows:
        full_epochs = protocol["full_baseline"]["epochs"]
        baselines = Table(title=f"baselines on real train images (full: {full_epochs} epochs)")
        for column in ("baseline", "ipc", "images", "acc %", "bal. acc %", "AUC %", "cached"):
            baselines.add_column(column, justify="left" if column == "baseline" else "right", no_wrap=True)
        for name, block in rows:
            m = block["metrics"]
            baselines.add_row(name, str(block.get("ipc", "all")), str(block["train_images"]), _pm(m["accuracy"]),
                              _pm(m["balanced_accuracy"]), _pm(m["auc"]), "yes" if block.get("cached") else "no")
        console.print(baselines)
    recall = Table(title="per-class recall % (mean over models)")
    recall.add_column("set")
    for name in real["class_names"]:
        recall.add_column(name, justify="right")
    for r in result["results"]:
        means = r["metrics"]["per_class_recall"]["mean"]
        recall.add_row(Path(r["file"]).name, *("-" if m is None else f"{100 * m:.0f}" for m in means))
    console.print(recall)
    if result.get("output"):
        console.print(f"report: {result['output']}" + (f", plot: {result['plot']}" if result.get("plot") else ""))
