"""evaluate under torchrun: the (input x net, baselines) task list split round-robin over ranks.

Every trained network is one task: model k of an input set, of the full baseline, or of the
random baseline of an IPC (its own random subset, seed ``seed + k``). Model k's weights and
batch order come from ``seed + k`` whichever rank trains it, so gathering the results at rank 0
and summarizing them in model order gives the numbers one process gives. Rank 0 decides which
baselines the cache already holds (and broadcasts it), and alone writes the cache.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable

from medcondense.evaluate.baselines import BaselineCache, _baseline_params, full_baseline_epochs, random_subset
from medcondense.evaluate.data import InputSet, RealData
from medcondense.evaluate.protocol import Plan, combine_single_runs, plan_runs, summary_of_runs

log = logging.getLogger(__name__)

Task = tuple[str, Any, int]  # (kind, key, model k): ("full", None, k), ("random", ipc, k), ("input", i, k)


def task_list(plan: Plan, inputs: list[InputSet], ipcs: list[int], need_full: bool, need_random: list[int]) -> list[Task]:
    """Every network to train, in a fixed order (the same on every rank)."""
    tasks: list[Task] = []
    if need_full:
        tasks += [("full", None, k) for k in range(plan.models)]
    for ipc in need_random:
        tasks += [("random", ipc, k) for k in range(plan.models)]
    for i in range(len(inputs)):
        tasks += [("input", i, k) for k in range(plan.models)]
    return tasks


def _run_task(task: Task, plan: Plan, real: RealData, inputs: list[InputSet], input_plans: list[Plan],
              tick: Callable[[], None]) -> dict[str, Any]:
    kind, key, k = task
    seed = plan.seed + k
    if kind == "full":
        epochs = full_baseline_epochs(len(real.train_y), plan.settings.epochs, plan.settings.batch_size, plan.full_steps)
        return plan_runs(plan, real, real.train_x, real.train_y, [seed], settings=replace(plan.settings, epochs=epochs), tick=tick)[0]
    if kind == "random":
        idx = random_subset(real.train_y, key, seed)
        return plan_runs(plan, real, real.train_x[idx], real.train_y[idx], [seed], tick=tick)[0]
    item = inputs[key]  # its own plan: an MTT set trains at its learned lr
    return plan_runs(input_plans[key], real, item.train_x, item.train_y, [seed], tick=tick)[0]


def run_sharded(
    plan: Plan, real: RealData, inputs: list[InputSet], input_plans: list[Plan], cache: BaselineCache,
    ipcs: list[int], which: list[str], group: Any, progress: Callable[[int], Any],
) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """Train this rank's share of the networks, gather every result; returns ``(full, {ipc:
    random}, [summary per input])`` as the one-process code computes them. ``plan`` is the
    report's (baselines), ``input_plans[i]`` the one input ``i`` trains with.

    ``progress(total)`` opens the progress bar for this rank's tasks (a context manager).
    """
    wanted: dict[str, dict[str, Any]] = {}
    if "full" in which:
        wanted["full"] = _baseline_params(plan, real, "full", None)
    if "random" in which:
        for ipc in ipcs:
            wanted[f"random:{ipc}"] = _baseline_params(plan, real, "random", ipc)
    hits = group.broadcast({name: cache.get(params) for name, params in wanted.items()} if group.is_main else None,
                           "reading the baseline cache")
    for name, hit in hits.items():
        if hit is not None:
            log.info("baseline %s: from the cache %s", name, cache.path)
    need_full = "full" in wanted and hits["full"] is None
    need_random = [ipc for ipc in ipcs if f"random:{ipc}" in wanted and hits[f"random:{ipc}"] is None]
    tasks = task_list(plan, inputs, ipcs, need_full, need_random)
    mine = [i for i in range(len(tasks)) if group.owner(i) == group.rank]
    log.info("rank %d of %d trains %d of %d networks", group.rank, group.world_size, len(mine), len(tasks))
    results: dict[int, dict[str, Any]] = {}
    with progress(len(mine)) as bar:
        for i in mine:
            results[i] = _run_task(tasks[i], plan, real, inputs, input_plans, bar.advance)
    for part in group.all_gather(results, "gathering the trained networks' results"):
        results.update(part)
    by_task = {tasks[i]: run for i, run in results.items()}
    return _assemble(plan, real, inputs, input_plans, ipcs, wanted, hits, by_task, cache, group)


def _assemble(plan, real, inputs, input_plans, ipcs, wanted, hits, by_task, cache, group):
    """Summaries in the one-process layout; rank 0 stores the new baselines in the cache."""
    models = range(plan.models)
    full = None
    if "full" in wanted:
        if hits["full"] is not None:
            full = {**hits["full"], "cached": True}
        else:
            epochs = full_baseline_epochs(len(real.train_y), plan.settings.epochs, plan.settings.batch_size, plan.full_steps)
            result = summary_of_runs([by_task[("full", None, k)] for k in models], epochs, len(real.train_y))
            if group.is_main:
                cache.put(wanted["full"], result)
            full = {**result, "cached": False}
    randoms: dict[int, dict[str, Any]] = {}
    for ipc in ipcs:
        name = f"random:{ipc}"
        if name not in wanted:
            continue
        if hits[name] is not None:
            randoms[ipc] = {**hits[name], "cached": True}
            continue
        blocks = []
        for k in models:
            size = len(random_subset(real.train_y, ipc, plan.seed + k))
            blocks.append(summary_of_runs([by_task[("random", ipc, k)]], plan.settings.epochs, size))
        result = {**combine_single_runs(blocks), "ipc": ipc}
        if group.is_main:
            cache.put(wanted[name], result)
        randoms[ipc] = {**result, "cached": False}
    summaries = [summary_of_runs([by_task[("input", i, k)] for k in models], input_plans[i].settings.epochs,
                                 len(item.train_y)) for i, item in enumerate(inputs)]
    return full, randoms, summaries
