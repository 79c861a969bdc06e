"""The real baselines: random real subsets per IPC and the full train split, trained once.

Results are cached in ``<real>.baselines.json`` (beside the real file, written atomically),
keyed by the real content hash and every option that changes them. :func:`real_baselines` is the
entry point ``score`` shares: the same numbers and cache as ``evaluate``'s baselines under the
same options, so a pipeline running both stages trains each baseline once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medcondense.atomic import write_json
from medcondense.evaluate.data import RealData
from medcondense.evaluate.protocol import Plan, combine_single_runs, evaluate_plan
from medcondense.train import TrainSettings

log = logging.getLogger(__name__)

BASELINES = ("random", "full")
CACHE_SCHEMA = "medcondense-baselines/1"
CACHE_SUFFIX = ".baselines.json"


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


def _baseline_params(plan: Plan, real: RealData, name: str, ipc: int | None) -> dict[str, Any]:
    s = plan.settings
    return {
        "real": real.content_hash, "baseline": name, "ipc": ipc, "arch": plan.arch, "epochs": s.epochs,
        "models": plan.models, "seed": plan.seed, "train_aug": plan.train_aug, "lr": s.lr,
        "batch_size": s.batch_size, "test_site": plan.test_site,
        "full_steps": plan.full_steps if name == "full" else None,
    }


def _random_baseline(plan: Plan, real: RealData, ipc: int, tick) -> dict[str, Any]:
    blocks = []
    for k in range(plan.models):
        idx = random_subset(real.train_y, ipc, plan.seed + k)
        blocks.append(evaluate_plan(plan, real, real.train_x[idx], real.train_y[idx], seed=plan.seed + k, models=1, tick=tick))
    return {**combine_single_runs(blocks), "ipc": ipc}


def _full_baseline(plan: Plan, real: RealData, tick) -> dict[str, Any]:
    epochs = full_baseline_epochs(len(real.train_y), plan.settings.epochs, plan.settings.batch_size, plan.full_steps)
    return evaluate_plan(plan, real, real.train_x, real.train_y, settings=replace(plan.settings, epochs=epochs), tick=tick)


def _cached(cache: BaselineCache, params: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    hit = cache.get(params)
    if hit is not None:
        log.info("baseline %s (ipc %s): from the cache %s", params["baseline"], params["ipc"], cache.path)
        return {**hit, "cached": True}
    result = compute()
    cache.put(params, result)
    return {**result, "cached": False}


def compute_baselines(
    plan: Plan, real: RealData, cache: BaselineCache, ipcs: list[int], which: list[str] | tuple[str, ...], tick,
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
    Returns ``(full, {ipc: random})`` in :func:`~medcondense.evaluate.protocol.evaluate_images`' summary layout.
    """
    plan = Plan(
        arch=arch, models=models, settings=TrainSettings(epochs=epochs), train_aug="none", augment=None,
        aug_ops=[], device=torch.device(device), seed=seed, full_steps=full_steps, test_site=None,
    )
    return compute_baselines(plan, real, BaselineCache(real.path), list(ipcs), which, tick or (lambda: None))
