"""The ``medcondense evaluate`` stage: ``run(config)`` judges every input against the real file.

In order: check the options, read the real file and the inputs (:mod:`.data`), compute the run
key and skip a finished identical report (:mod:`medcondense.runkey`), resolve the protocol
(:mod:`.protocol`), train or fetch the baselines (:mod:`.baselines`), train K nets per input,
then write the report JSON and the plot (:mod:`.report`). The report's keys are listed in
:mod:`medcondense.evaluate` and docs/evaluate.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

from medcondense import metrics, runkey
from medcondense.atomic import write_json
from medcondense.config import EvaluateConfig, config_to_dict
from medcondense.errors import ConfigError
from medcondense.evaluate.baselines import BASELINES, BaselineCache, compute_baselines, full_baseline_epochs
from medcondense.evaluate.data import InputSet, RealData, load_input, load_real
from medcondense.evaluate.protocol import TRAIN_AUGS, evaluate_plan, make_plan, plan_for_input
from medcondense.evaluate.report import render, write_plot
from medcondense.evaluate.sites import real_paths, run_cross_site
from medcondense.nets import NETS

log = logging.getLogger(__name__)

__all__ = ["run", "render"]


def _check_config(config: EvaluateConfig) -> None:
    if not config.inputs:
        raise ConfigError("give at least one set to evaluate")
    if config.models < 1:
        raise ConfigError(f"--models must be at least 1, got {config.models}")
    if config.epochs is not None and config.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {config.epochs}")
    if config.arch not in NETS:
        raise ConfigError(f"--arch {config.arch!r}: expected one of {', '.join(NETS)}")
    if config.train_aug is not None and config.train_aug not in TRAIN_AUGS:
        raise ConfigError(f"--train-aug {config.train_aug!r}: expected one of {', '.join(TRAIN_AUGS)}")
    unknown = [b for b in config.baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"--baselines {','.join(unknown)}: expected a comma list of {', '.join(BASELINES)} or none")
    if config.batch_size < 1 or config.full_steps < 1 or (config.lr is not None and not (math.isfinite(config.lr) and config.lr > 0)):
        raise ConfigError(f"batch_size and full_steps must be at least 1 and lr a positive finite number, "
                          f"got {config.batch_size}, {config.full_steps}, {config.lr}")


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
    """What decides the report: the real and input content hashes and the options (not paths, device)."""
    options = {k: v for k, v in config_to_dict(config).items() if k not in ("inputs", "real", "output", "plot", "overwrite", "device")}
    return runkey.run_key({"real": real.content_hash, "inputs": [i.content_hash for i in inputs], "options": options})


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

    from medcondense import distributed

    started = time.time()
    _check_config(config)
    reals = real_paths(config.real)
    if len(reals) > 1 or config.per_site:
        if distributed.world_size() > 1:
            raise ConfigError("cross-site evaluation (several --real files or --per-site) runs as one process, "
                              "not under torchrun with several processes")
        return run_cross_site(config, reals, started)
    if not reals:
        raise ConfigError("give the real data set to test on with --real")
    config = dataclasses.replace(config, real=reals[0])
    real = load_real(config.real, config.test_site)
    inputs = [load_input(p, real, allow_mismatch=config.allow_mismatch) for p in config.inputs]
    run_key = _run_key(config, real, inputs)
    plan = make_plan(config, real)
    laterality = bool(real.image_set.attrs.get("laterality", True))
    group = distributed.join(plan.device)  # every check above passed on every rank
    if config.output:  # without -o nothing is written, so there is nothing to skip
        group.on_main(lambda: runkey.skip_if_done(config.output, run_key, config.overwrite, runkey.json_record),
                      "checking the output")
    cache = BaselineCache(config.real)
    ipcs = sorted({i.ipc for i in inputs})
    total = plan.models * (len(inputs) + len(ipcs) * ("random" in config.baselines) + ("full" in config.baselines))
    log.info("evaluating %d set(s) with %d %s net(s) each, %d epochs, on %s",
             len(inputs), plan.models, plan.arch, plan.settings.epochs, describe_device(plan.device))
    own = [plan_for_input(plan, config, item.learned_lr, laterality) for item in inputs]  # (plan, protocol)
    for item, (own_plan, protocol) in zip(inputs, own):
        if own_plan is not plan:
            log.info("%s: training at its learned lr %.6g with DSA for %d epochs (MTT; --lr/--train-aug override)",
                     Path(item.path).name, protocol["lr"], protocol["epochs"])
    summaries: list[dict[str, Any]] | None = None
    if group.active:  # the networks split round-robin over the ranks, results gathered
        from medcondense.evaluate.sharded import run_sharded

        full, randoms, summaries = run_sharded(plan, real, inputs, [p for p, _ in own], cache, ipcs, config.baselines,
                                               group, lambda n: progress("evaluate", total=n))
    with progress("evaluate", total=0 if group.active else total) as bar:
        if not group.active:
            full, randoms = compute_baselines(plan, real, cache, ipcs, config.baselines, bar.advance)
        results = []
        for index, item in enumerate(inputs):
            bar.update(status=Path(item.path).name)
            own_plan, protocol = own[index]
            if summaries is not None:
                summary = summaries[index]
            else:
                summary = evaluate_plan(own_plan, real, item.train_x, item.train_y, tick=bar.advance)
            baselines = {}
            if item.ipc in randoms:
                baselines["random"] = _baseline_block(randoms[item.ipc])
            if full is not None:
                baselines["full"] = _baseline_block(full)
            results.append({
                "file": item.path, "kind": item.kind, "method": item.method, "ipc": item.ipc,
                "train_images": summary["train_images"], "content_hash": item.content_hash,
                "metrics": _metrics_block(summary), "baselines": baselines, "recovery": _recovery(summary, full),
                "protocol": protocol,
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
        extra={"distributed": group.describe()} if group.active else None,  # not in the run key
    )

    def write() -> dict[str, Any]:
        if report["plot"]:
            write_plot(report, report["plot"])
        if config.output:
            write_json(config.output, report)
        return report

    group.on_main(write, "writing the report")  # rank 0 writes; every rank learns how it went
    return report
