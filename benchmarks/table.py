"""The papers' table: test accuracy (mean ± std) of DC, DSA, DM, random, herding and k-center per IPC.

Issue #5's benchmark. For every task (real data sets of different difficulty built by the
examples, see ../shared/DATA.md) and every method and IPC it runs medcondense's ``distill`` then
``evaluate`` (the reference ConvNet, K fresh nets, tested on the task's test split), and adds
evaluate's full-train-split baseline. Every cell is cached as JSON in the work folder
(``benchmarks/work/table/<task>/<method>_ipc<N>.json``, keyed by the data's content hash and the
settings), so an interrupted run resumes where it stopped and a re-run only prints. Results go to
``benchmarks/results/table.json`` and a markdown table (``table.md`` beside it, and stdout).

Configurations (``--quick`` is the default):

* ``--quick``: a CPU budget that finishes in under an hour on 2 idle cores. Brain tasks at 100
  train / 30 test images per class, Fashion-MNIST at 100 / 30 per class; DM 50 iterations,
  DC/DSA 10 iterations, batch_real 64; DC/DSA only at IPC 1 (one DC/DSA iteration at IPC 10 is
  10 outer x 50 inner loops, minutes on a CPU: ask for them explicitly with ``--loop-ipcs 1 10``);
  evaluation: 3 nets, 100 epochs with DSA augmentation; the full baseline: 1 net, 100 SGD steps.
* ``--quick50``: the quick budget at IPC 50 only, with 500 train images a class (at 100 a class,
  IPC 50 would be half the train split): one task and seed of dm-ref, dm, dm-herding, idm and random
  took about 3 CPU-hours, mostly evaluation (IDM's set decodes to 2,000 images).
* ``--paper``: the reference budgets, for a GPU. Brain tasks at 1000 / 300 per class, the whole
  Fashion-MNIST; DC/DSA 1000 iterations, DM 20000, batch_real 256, IPC 1, 10 and 50; evaluation
  10 nets, 1000 epochs with DSA augmentation (the reference's ``dsa`` evaluation); full baseline
  5 nets, 1000 SGD steps (evaluate's default).

The full-train-split row is evaluate's ``full`` baseline (``evaluate.baselines.real_baselines``, the same
cache in ``<data>.baselines.json``), trained without augmentation for ``min(epochs, full_steps /
batches per epoch)`` epochs: its own, smaller budget, because on a CPU it costs more than all the
small sets together.

Every method is evaluated with the same protocol (DSA augmentation while training the evaluation
nets, as the DSA/DM papers evaluate), so rows compare like with like. ``random`` is one random real
subset per cell, drawn by ``distill --method random``.

    OMP_NUM_THREADS=1 python benchmarks/table.py --quick
    python benchmarks/table.py --paper --device cuda
    python benchmarks/table.py --quick --tasks aal10 fmnist --methods dm herding --ipcs 1
    python benchmarks/table.py --report-only     # rebuild the table from the cached cells

Equal compute (#17): ``idm`` runs for as many iterations as fit in the wall-clock of our DM's
``iterations["dm"]`` on the same machine (a short probe of both, cached per task and IPC, gives the
seconds per iteration), and ``dm-ref`` is the reference DM at that same wall-clock: the reference
reaches ``iterations["dm"] / speedup`` iterations in it (the speedup, reference s/it over ours, from
``benchmarks/results/versus_reference.json``; 1.0 with a warning when absent), run with our DM,
which matches the reference within noise (docs/results.md, fidelity). ``--seeds 0 1`` repeats every
distilled cell over distillation seeds (seed 0 keeps the old cell names). ``dm-herding`` and
``dm-kcenter`` are our DM with ``--init herding|kcenter``: the same iterations as ``dm``, so they
show what the start alone is worth at (nearly) equal compute; ``idm-herding`` is ``idm`` (its
equal-compute iterations) from the herding start.

    python benchmarks/table.py --quick --tasks aal10 jhu_tracts fmnist --methods dm dm-ref idm --seeds 0 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "table"
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("dm", "dsa", "dc", "random", "herding", "kcenter", "idm", "dm-ref", "dm-herding", "dm-kcenter",
           "idm-herding")
#: rows run at DM's wall-clock (see the module docstring): row -> the method it distils with
EQUAL_COMPUTE = {"idm": "idm", "dm-ref": "dm"}
#: rows that distil with another start (``--init``): row -> (method, init). Each runs its method's
#: iterations (idm: its equal-compute count); the coreset pick, one pass of the train split through a
#: random ConvNet (seconds), is not counted against it
INIT_VARIANTS = {"dm-herding": ("dm", "herding"), "dm-kcenter": ("dm", "kcenter"), "idm-herding": ("idm", "herding")}
PROBE_ITERATIONS = 3
FULL = "full"  # the full-train-split row's method name in cells
LOOP_METHODS = ("dc", "dsa")  # the gradient-matching methods with outer/inner loops (costly at IPC > 1)
log = logging.getLogger("benchmarks.table")


@dataclass(frozen=True)
class Budget:
    """Everything that decides a cell's numbers, apart from the data, method and IPC."""

    name: str
    brain_train_per_class: int
    brain_test_per_class: int
    fmnist_train_per_class: int | None  # None: the whole set
    fmnist_test_per_class: int | None
    iterations: dict[str, int]
    batch_real: int
    ipcs: tuple[int, ...]
    loop_ipcs: tuple[int, ...]  # IPCs at which DC/DSA run
    eval_models: int
    eval_epochs: int
    eval_train_aug: str
    full_steps: int
    full_models: int
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Budget(
    name="quick", brain_train_per_class=100, brain_test_per_class=30, fmnist_train_per_class=100,
    fmnist_test_per_class=30, iterations={"dm": 50, "dc": 10, "dsa": 10}, batch_real=64, ipcs=(1, 10),
    loop_ipcs=(1,), eval_models=3, eval_epochs=100, eval_train_aug="dsa", full_steps=100,
    full_models=1,
)

BUDGETS: dict[str, Budget] = {
    "quick": QUICK,
    # #17's IPC 50 cell on a CPU: the quick budget with 500 images a class (about 460 train after the
    # validation split), so IPC 50 is about a tenth of the train split, not half of it
    "quick50": replace(QUICK, name="quick50", brain_train_per_class=500, fmnist_train_per_class=500, ipcs=(50,),
                       loop_ipcs=()),
    "paper": Budget(
        name="paper", brain_train_per_class=1000, brain_test_per_class=300, fmnist_train_per_class=None,
        fmnist_test_per_class=None, iterations={"dm": 20000, "dc": 1000, "dsa": 1000}, batch_real=256,
        ipcs=(1, 10, 50), loop_ipcs=(1, 10, 50), eval_models=10, eval_epochs=1000, eval_train_aug="dsa",
        full_steps=1000, full_models=5,
    ),
}


# --------------------------------------------------------------------------- tasks (data sets)

def _build_brain(task: str) -> Callable[[Budget, Path], Path]:
    def build(budget: Budget, folder: Path) -> Path:
        sys.path.insert(0, str(ROOT / "examples"))
        from brain_patches import build_task

        build_task(task, folder, formats=("h5",), train_per_class=budget.brain_train_per_class,
                   test_per_class=budget.brain_test_per_class, seed=budget.seed, overwrite=True)
        return folder / "data.h5"
    return build


def _build_fmnist(budget: Budget, folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "examples"))
    from fashion_mnist import build_image_set

    from medcondense import store

    out = folder / "data.h5"
    image_set = build_image_set(limit_train=budget.fmnist_train_per_class, limit_test=budget.fmnist_test_per_class,
                                seed=budget.seed, out_path=out)
    store.write(out, image_set, overwrite=True)
    return out


# name -> (builder, what it is). Difficulty from examples/brain_patches.py --list and the measured table.
TASKS: dict[str, tuple[Callable[[Budget, Path], Path], str]] = {
    "aal_lobes4": (_build_brain("aal_lobes4"), "AAL -> 4 cerebral lobes, 32 px brain patches (easier)"),
    "aal10": (_build_brain("aal10"), "AAL -> 10 regions, 32 px brain patches (the examples' task)"),
    "jhu_tracts": (_build_brain("jhu_tracts"), "JHU white matter -> 7 tract families, 48 mm patches (harder)"),
    "brodmann": (_build_brain("brodmann"), "Brodmann areas -> 8 groups"),
    "fmnist": (_build_fmnist, "Fashion-MNIST (Debian dataset-fashion-mnist), 28 px, 10 classes"),
}
DEFAULT_TASKS = ("aal_lobes4", "aal10", "jhu_tracts", "fmnist")


def task_data(task: str, budget: Budget, work: Path) -> Path:
    """The task's ``data.h5`` in the work folder, built once per budget (data sizes differ)."""
    folder = work / budget.name / task
    path = folder / "data.h5"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        log.info("building %s into %s", task, folder)
        TASKS[task][0](budget, folder)
    return path


# --------------------------------------------------------------------------- cells

def cell_key(data_hash: str, method: str, ipc: int, budget: Budget) -> str:
    """Hash of what decides a cell's numbers (the device is not part of it, as in evaluate's cache)."""
    settings = {k: v for k, v in asdict(budget).items() if k not in ("ipcs", "loop_ipcs")}
    payload = {"data": data_hash, "method": method, "ipc": ipc, "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _read_cell(path: Path, key: str) -> dict | None:
    try:
        cell = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return cell if cell.get("key") == key else None


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)


def _machine(device: str) -> dict:
    import torch

    from medcondense.device import describe_device, resolve_device

    return {"device": describe_device(resolve_device(device)), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _seconds_per_iteration(data: Path, method: str, ipc: int, budget: Budget, device: str) -> float:
    """A short probe: seconds per iteration of ``method`` on this task (iteration 0 included)."""
    from medcondense.config import DistillConfig
    from medcondense.distill import pipeline as distill_pipeline

    summary = distill_pipeline.run(DistillConfig(
        input=str(data), output=str(data.parent / f"probe_{method}_ipc{ipc}.h5"), method=method, ipc=ipc,
        iterations=PROBE_ITERATIONS - 1, batch_real=budget.batch_real, device=device, overwrite=True,
        preset="paper" if budget.name == "paper" else "quick", checkpoint_every=0,
    ))
    return float(summary["seconds_per_iteration"])


def reference_speedup(ipc: int) -> float:
    """Reference DM s/it over ours at ``ipc`` (benchmarks/results/versus_reference.json), else 1.0."""
    try:
        rows = json.loads((RESULTS / "versus_reference.json").read_text()).get("rows", [])
    except (OSError, ValueError):
        rows = []
    found = [r.get("speedup") for r in rows if r.get("method") == "dm" and r.get("ipc") == ipc and r.get("speedup")]
    if not found:
        log.warning("no reference DM speed at IPC %d in versus_reference.json; assuming the same speed", ipc)
        return 1.0
    return float(found[0])


def equal_compute_iterations(task: str, data: Path, method: str, ipc: int, budget: Budget, device: str) -> int:
    """Iterations that ``method`` (an :data:`EQUAL_COMPUTE` row) runs in the wall-clock of our DM's budget."""
    dm_iterations = budget.iterations["dm"]
    if method == "dm-ref":
        return max(1, round(dm_iterations / reference_speedup(ipc)))
    probe = data.parent / f"probe_ipc{ipc}.json"
    try:
        speeds = json.loads(probe.read_text())
    except (OSError, ValueError):
        speeds = {m: _seconds_per_iteration(data, m, ipc, budget, device) for m in ("dm", "idm")}
        speeds["machine"] = _machine(device)
        _write_json(probe, speeds)
    return max(1, round(dm_iterations * speeds["dm"] / speeds["idm"]))


def _iteration_row(method: str) -> str:
    """The row whose iteration count ``method`` runs: an init variant runs its base method's."""
    return INIT_VARIANTS[method][0] if method in INIT_VARIANTS else method


def run_cell(task: str, data: Path, method: str, ipc: int, budget: Budget, device: str, note: str,
             seed: int | None = None) -> dict:
    """Distil (or pick the coreset) and evaluate one cell; the full baseline comes from evaluate's cache."""
    from medcondense import store
    from medcondense.config import DistillConfig, EvaluateConfig
    from medcondense.distill import pipeline as distill_pipeline
    from medcondense.evaluate import pipeline as evaluate

    seed = budget.seed if seed is None else seed
    syn = data.parent / f"{method}_ipc{ipc}{'' if seed == budget.seed else f'_seed{seed}'}.h5"
    distil_method, init = INIT_VARIANTS.get(method, (EQUAL_COMPUTE.get(method, method), None))
    row = _iteration_row(method)
    iterations = budget.iterations.get(row)
    if row in EQUAL_COMPUTE:
        iterations = equal_compute_iterations(task, data, row, ipc, budget, device)
    started = time.perf_counter()
    summary = distill_pipeline.run(DistillConfig(
        input=str(data), output=str(syn), method=distil_method, ipc=ipc, iterations=iterations, init=init,
        batch_real=budget.batch_real, device=device, seed=seed, overwrite=True,
        preset="paper" if budget.name == "paper" else "quick",
    ))
    seconds_distill = time.perf_counter() - started
    started = time.perf_counter()
    report = evaluate.run(EvaluateConfig(
        inputs=[str(syn)], real=str(data), models=budget.eval_models, epochs=budget.eval_epochs,
        train_aug=budget.eval_train_aug, baselines=[], device=device, seed=budget.seed,
    ))
    result = report["results"][0]
    return {
        "task": task, "method": method, "ipc": ipc, "budget": budget.name, "data": str(data), "seed": seed,
        "data_hash": store.content_hash(store.read(data)), "iterations": iterations,
        "train_images": result.get("train_images"),
        "accuracy": result["metrics"]["accuracy"], "balanced_accuracy": result["metrics"]["balanced_accuracy"],
        "hyperparameters": summary["hyperparameters"], "seconds_distill": round(seconds_distill, 2),
        "seconds_per_iteration": summary.get("seconds_per_iteration"), "seconds_eval": round(time.perf_counter() - started, 2),
        "protocol": report["protocol"], "machine": _machine(device), "note": note,
    }


def run_full_cell(task: str, data: Path, budget: Budget, device: str, note: str) -> dict:
    """Evaluate's full-train-split baseline of one task (``full_models`` nets, ``full_steps`` SGD steps)."""
    from medcondense import store
    from medcondense.evaluate.baselines import real_baselines
    from medcondense.evaluate.data import load_real

    started = time.perf_counter()
    real = load_real(data)
    full, _ = real_baselines(real, ipcs=[], models=budget.full_models, epochs=budget.eval_epochs,
                             full_steps=budget.full_steps, device=device, seed=budget.seed, which=("full",))
    return {
        "task": task, "method": FULL, "ipc": 0, "budget": budget.name, "data": str(data),
        "data_hash": store.content_hash(store.read(data)), "accuracy": full["accuracy"],
        "balanced_accuracy": full["balanced_accuracy"], "epochs": full.get("epochs"),
        "train_images": full.get("train_images"), "models": full.get("models"), "cached": full.get("cached"),
        "seconds_distill": 0.0, "seconds_eval": round(time.perf_counter() - started, 2),
        "machine": _machine(device), "note": note,
    }


def plan_cells(tasks: list[str], methods: list[str], ipcs: list[int], loop_ipcs: list[int]) -> list[tuple[str, str, int]]:
    """Cells in priority order: the cheap methods everywhere first, then DC/DSA (the slow ones on a CPU)."""
    cheap = [m for m in methods if m not in LOOP_METHODS]
    loops = [m for m in methods if m in LOOP_METHODS]
    first, rest = ipcs[:1], ipcs[1:]
    order = [(t, m, i) for i in first for t in tasks for m in cheap]
    order += [(t, FULL, 0) for t in tasks]
    order += [(t, m, i) for i in rest for t in tasks for m in cheap]
    order += [(t, m, i) for i in ipcs if i in loop_ipcs for t in tasks for m in loops]
    return order


# --------------------------------------------------------------------------- table

def _pct(metric: dict | None) -> str:
    if not metric:
        return "—"
    return f"{100 * metric['mean']:.1f} ± {100 * metric['std']:.1f}"


def merge_seeds(cells: list[dict]) -> dict[tuple[str, str, int], dict]:
    """Cells by (task, method, ipc); several seeds of one cell become one (mean, std over seeds)."""
    import statistics

    groups: dict[tuple[str, str, int], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["task"], c["method"], c["ipc"]), []).append(c)
    merged = {}
    for key, group in groups.items():
        if len(group) == 1:
            merged[key] = group[0]
            continue
        means = [c["accuracy"]["mean"] for c in group]
        merged[key] = {**group[0], "accuracy": {"mean": statistics.fmean(means), "std": statistics.stdev(means)},
                       "seeds": sorted(c.get("seed", 0) for c in group)}
    return merged


def markdown_table(cells: list[dict], tasks: list[str], methods: list[str], ipcs: list[int]) -> str:
    """Rows data set x method, columns IPC (mean ± std test accuracy %), a full-data row per data set.

    A cell run over several distillation seeds shows the mean and std of the seeds' means."""
    by_key = merge_seeds(cells)
    head = "| data set | method | " + " | ".join(f"IPC {i}" for i in ipcs) + " | run |"
    lines = [head, "|" + "---|" * (len(ipcs) + 3)]
    for task in tasks:
        task_cells = [c for c in cells if c["task"] == task]
        if not task_cells:
            continue
        for method in methods:
            row = [by_key.get((task, method, i)) for i in ipcs]
            if not any(row):
                continue
            runs = sorted({_run_label(c) for c in row if c})
            lines.append(f"| {task} | {method} | " + " | ".join(_pct(c and c["accuracy"]) for c in row)
                         + f" | {'; '.join(runs)} |")
        full = by_key.get((task, FULL, 0))
        if full is not None:
            steps = f"{full['models']} net(s), {full['epochs']} epochs on {full['train_images']} images"
            value = _pct(full["accuracy"]) if full["models"] > 1 else f"{100 * full['accuracy']['mean']:.1f}"
            lines.append(f"| {task} | **full train split** | " + " | ".join(value for _ in ipcs)
                         + f" | {_run_label(full)}; {steps} |")
    return "\n".join(lines)


def _run_label(cell: dict) -> str:
    label = f"{cell['budget']}, {cell['machine']['device']}" + (f", {cell['note']}" if cell.get("note") else "")
    if cell.get("seeds"):
        label += f", seeds {','.join(map(str, cell['seeds']))} (± over seeds)"
    if _iteration_row(cell["method"]) in EQUAL_COMPUTE and cell.get("iterations"):
        label += f", {cell['iterations']} it at DM's wall-clock"
    return label


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--quick", dest="budget", action="store_const", const="quick",
                       help="CPU budget, under an hour on 2 idle cores (default)")
    which.add_argument("--quick50", dest="budget", action="store_const", const="quick50",
                       help="the quick budget at IPC 50, with 500 train images a class (CPU hours)")
    which.add_argument("--paper", dest="budget", action="store_const", const="paper",
                       help="the reference budgets (1000/20000 iterations, IPC 1/10/50): needs a GPU")
    p.set_defaults(budget="quick")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=list(TASKS),
                   help=f"data sets (default {' '.join(DEFAULT_TASKS)})")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--ipcs", nargs="+", type=int, default=None, help="IPCs (default: the budget's)")
    p.add_argument("--loop-ipcs", nargs="+", type=int, default=None,
                   help="IPCs at which DC/DSA run (default: the budget's; quick: 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--workdir", type=Path, default=WORK, help=f"cell cache and data (default {WORK.relative_to(ROOT)})")
    p.add_argument("--out", type=Path, default=RESULTS / "table.json", help="JSON of every cell (+ .md beside it)")
    p.add_argument("--note", default="", help="a word on the machine, stored with each new cell (e.g. 'shared 2-core CPU')")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="distillation seeds per cell (default: the budget's one seed); the table averages them")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table from cached cells")
    p.add_argument("--overwrite", action="store_true", help="recompute cached cells")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the missing cells in priority order, then write and print the table."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    import torch

    from medcondense import store

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = BUDGETS[args.budget]
    ipcs = args.ipcs or list(budget.ipcs)
    loop_ipcs = args.loop_ipcs or list(budget.loop_ipcs)
    cells = []
    seeds = args.seeds or [budget.seed]
    planned = [(t, m, i, s) for t, m, i in plan_cells(args.tasks, args.methods, ipcs, loop_ipcs)
               for s in (seeds if m != FULL else [budget.seed])]
    for task, method, ipc, seed in planned:
        folder = args.workdir / budget.name / task
        tail = "" if seed == budget.seed else f"_seed{seed}"
        path = folder / (f"cell_{method}.json" if method == FULL else f"cell_{method}_ipc{ipc}{tail}.json")
        if args.report_only:
            cell = json.loads(path.read_text()) if path.exists() else None
        else:
            data = task_data(task, budget, args.workdir)
            key = cell_key(store.content_hash(store.read(data)), method, ipc, budget)
            if seed != budget.seed:
                key = hashlib.sha256(f"{key}:{seed}".encode()).hexdigest()[:24]
            cell = None if args.overwrite else _read_cell(path, key)
            if cell is None:
                if method == FULL:
                    cell = run_full_cell(task, data, budget, args.device, args.note)
                else:
                    cell = run_cell(task, data, method, ipc, budget, args.device, args.note, seed)
                cell["key"] = key
                _write_json(path, cell)
                log.info("%s %s IPC %d: %s (distil %.0f s, eval %.0f s)", task, method, ipc,
                         _pct(cell["accuracy"]), cell["seconds_distill"], cell["seconds_eval"])
        if cell is not None:
            cells.append(cell)
    table = markdown_table(cells, args.tasks, args.methods, ipcs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write_json(args.out, {"budget": asdict(budget), "tasks": {t: TASKS[t][1] for t in args.tasks}, "cells": cells})
    md = args.out.with_suffix(".md")
    md.write_text(table + "\n")
    print(table)  # the benchmark's final table goes to stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
