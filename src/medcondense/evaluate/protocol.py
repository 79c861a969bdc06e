"""How evaluate trains and tests a network: the reference protocol and its resolved settings.

SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, lr x0.1 at half the epochs
(:class:`medcondense.train.TrainSettings`); 300 epochs, or 1000 with ``--train-aug dsa``.
:func:`evaluate_images` trains K fresh nets (model k seeded with ``seed + k``) and measures each
on the test images; :class:`Plan` holds what one run resolved from its config
(:func:`make_plan`), and :func:`evaluate_plan` applies it to one train set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from medcondense import metrics
from medcondense.config import EvaluateConfig
from medcondense.errors import ConfigError, RuntimeFailure
from medcondense.evaluate.data import RealData
from medcondense.nets import build_net
from medcondense.train import Augment, TrainSettings, predict_proba, train_classifier

TRAIN_AUGS = ("none", "dsa")
DEFAULT_EPOCHS = 300
DSA_EPOCHS = 1000
DEFAULT_LR = 0.01
DEFAULT_TRAIN_AUG = "none"


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
    net = train_net(train_x, train_y, arch=arch, num_classes=num_classes, settings=settings, augment=augment, seed=seed)
    try:
        proba = predict_proba(net, test_x)
    except torch.OutOfMemoryError:
        raise RuntimeFailure(f"out of memory while testing a {arch}", hint="use --device cpu") from None
    return metrics.classification_metrics(test_y, proba, num_classes)


def train_net(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    arch: str,
    num_classes: int,
    settings: TrainSettings,
    augment: Augment | None,
    seed: int,
) -> torch.nn.Module:
    """One fresh net trained on standardized images: weights from ``seed`` (drawn without touching
    the global random state), batch order and augmentation from a generator seeded with ``seed``.
    Cross-site evaluation trains with it once and tests the same net at every site."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net(arch, train_x.shape[1], num_classes, train_x.shape[-1]).to(train_x.device)
    generator = torch.Generator().manual_seed(seed)
    try:
        train_classifier(net, train_x, train_y, settings, augment=augment, generator=generator)
    except torch.OutOfMemoryError:
        raise RuntimeFailure(
            f"out of memory while training a {arch} on {train_x.shape[0]} images",
            hint="lower --set evaluate.batch_size=..., or use --device cpu",
        ) from None
    return net


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
    runs = evaluate_runs(train_x, train_y, test_x, test_y, seeds=[seed + k for k in range(models)], arch=arch,
                         settings=settings, augment=augment, device=device, num_classes=num_classes,
                         on_model_done=on_model_done)
    return summary_of_runs(runs, settings.epochs, len(train_y))


def summary_of_runs(runs: list[dict[str, Any]], epochs: int, train_images: int) -> dict[str, Any]:
    """:func:`evaluate_images`' summary of per-model results (in model order)."""
    return {**metrics.summarize(runs), "models": len(runs), "epochs": epochs, "train_images": int(train_images)}


def evaluate_runs(
    train_x: torch.Tensor | np.ndarray,
    train_y: torch.Tensor | np.ndarray,
    test_x: torch.Tensor | np.ndarray,
    test_y: torch.Tensor | np.ndarray,
    *,
    seeds: list[int],
    arch: str = "convnet",
    settings: TrainSettings | None = None,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    on_model_done: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One :func:`medcondense.metrics.classification_metrics` result per seed: a fresh net whose
    weights and batch order come from that seed (so models can be trained on different ranks)."""
    settings = settings or TrainSettings()
    device = torch.device(device)
    tx = torch.as_tensor(train_x, dtype=torch.float32).to(device)
    ty = torch.as_tensor(train_y, dtype=torch.long).to(device)
    vx = torch.as_tensor(test_x, dtype=torch.float32).to(device)
    vy = np.asarray(torch.as_tensor(test_y).cpu().numpy(), dtype=np.int64)
    if num_classes is None:
        num_classes = int(max(ty.max().item(), vy.max(initial=0))) + 1
    runs = []
    for seed in seeds:
        runs.append(_train_and_test_one(
            tx, ty, vx, vy, arch=arch, num_classes=num_classes, settings=settings, augment=augment, seed=seed,
        ))
        if on_model_done is not None:
            on_model_done()
    return runs


def combine_single_runs(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge K one-model results (each from its own train set) into one K-model summary."""
    runs = []
    for block in blocks:
        runs.append({
            **{name: block[name]["values"][0] for name in metrics.SCALAR_METRICS},
            "per_class_recall": block["per_class_recall"]["mean"],
        })
    summary = metrics.summarize(runs)
    return {**summary, "models": len(blocks), "epochs": blocks[0]["epochs"], "train_images": blocks[0]["train_images"]}


@dataclass
class Plan:
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


def make_plan(config: EvaluateConfig, real: RealData) -> Plan:
    """Resolve the epochs (300, 1000 with DSA, or ``--epochs``), the augmentation and the device."""
    from medcondense.distributed import resolve_device  # cuda:$LOCAL_RANK under torchrun

    train_aug = config.train_aug or DEFAULT_TRAIN_AUG
    epochs = config.epochs or (DSA_EPOCHS if train_aug == "dsa" else DEFAULT_EPOCHS)
    laterality = bool(real.image_set.attrs.get("laterality", True))
    aug_ops: list[str] = []
    if train_aug == "dsa":
        from medcondense.augment import default_ops

        aug_ops = default_ops(laterality)
    return Plan(
        arch=config.arch,
        models=config.models,
        settings=TrainSettings(epochs=epochs, lr=config.lr or DEFAULT_LR, batch_size=config.batch_size),
        train_aug=train_aug,
        augment=train_augment(train_aug, laterality),
        aug_ops=aug_ops,
        device=resolve_device(config.device),
        seed=config.seed,
        full_steps=config.full_steps,
        test_site=config.test_site,
    )


def plan_runs(plan: Plan, real: RealData, x: torch.Tensor, y: np.ndarray, seeds: list[int], *, settings=None, tick=None):
    """:func:`evaluate_runs` of ``x, y`` on the real test split under ``plan``, one result per seed."""
    return evaluate_runs(
        x, y, real.test_x, real.test_y, seeds=seeds, arch=plan.arch, settings=settings or plan.settings,
        augment=plan.augment, device=plan.device, num_classes=len(real.class_names), on_model_done=tick,
    )


def plan_for_input(plan: Plan, config: EvaluateConfig, learned_lr: float | None, laterality: bool) -> tuple[Plan, dict[str, Any]]:
    """The plan one input trains with, and its ``protocol`` record for the report.

    An MTT set (``learned_lr``) trains at its learned step size with DSA, as the reference
    evaluates it, unless ``--lr`` or ``--train-aug`` was given; every other input (and every
    baseline) uses the report's plan.
    """
    from dataclasses import replace

    if learned_lr is None or config.lr is not None or config.train_aug is not None:
        why = "the report's protocol" if learned_lr is None else "the report's protocol (--lr/--train-aug given)"
        return plan, {"lr": plan.settings.lr, "train_aug": plan.train_aug, "epochs": plan.settings.epochs, "source": why}
    from medcondense.augment import default_ops

    epochs = config.epochs or DSA_EPOCHS
    own = replace(plan, settings=replace(plan.settings, lr=learned_lr, epochs=epochs), train_aug="dsa",
                  augment=train_augment("dsa", laterality), aug_ops=default_ops(laterality))
    return own, {"lr": learned_lr, "train_aug": "dsa", "epochs": epochs,
                 "source": "the set's learned_lr (MTT) with DSA, as the reference evaluates; --lr/--train-aug override"}


def evaluate_plan(plan: Plan, real: RealData, x: torch.Tensor, y: np.ndarray, *, settings=None, seed=None, models=None, tick=None):
    """:func:`evaluate_images` of ``x, y`` on the real test split under ``plan`` (overrides optional)."""
    return evaluate_images(
        x, y, real.test_x, real.test_y, arch=plan.arch, models=models or plan.models,
        settings=settings or plan.settings, augment=plan.augment, device=plan.device,
        seed=plan.seed if seed is None else seed, num_classes=len(real.class_names), on_model_done=tick,
    )
