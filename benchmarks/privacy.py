"""Privacy you can put a number on (issue #11): accuracy and membership-inference AUC/TPR per set.

For every task and every row it distils (or picks) a set, evaluates it (test accuracy, K nets) and
audits it with ``score --mia`` (``set_distance`` and ``loss``; ``lira`` with ``--lira``). Rows:

* ``full``: the whole train split (accuracy: evaluate's full baseline; MIA: the ``full``
  artefact of the loss attack; set distance of the train split against itself is 1 by definition
  and is not reported);
* ``random``: a random real subset at the IPC (``distill --method random``);
* ``dm_real`` / ``dm_noise``: DM from real images / from noise;
* ``dp_eps1``, ``dp_eps4``, ``dp_eps8``: DP-DM at epsilon 1, 4, 8 (delta ``--delta``);
* ``dp_epsinf``: the same DP-DM code without noise (epsilon = inf: no guarantee; shows what the
  noise costs, separately from what the released-statistics design costs).

Columns: test accuracy mean ± std, AUC [95 % CI] and TPR at 1 % FPR [CI] per attack, members /
non-members, epsilon, delta, sigma, T, C, seconds.

The brain tasks' test split is the mirrored other hemisphere, so train and test are not
exchangeable (the noise floor shows it); the brain tasks therefore play with
``--mia-nonmembers val`` with as many val as train images per class, ``--mia-unit image`` and
``--dp-unit image``: image-level, not patient-level, privacy (one subject). Fashion-MNIST has no
patients either.

Every cell (task x row) is cached as JSON under ``--workdir`` keyed by the data's content hash and
the settings, so an interrupted run resumes and a rerun only prints. Results:
``benchmarks/results/privacy.json`` and ``privacy.md``.

Presets:

* ``--tiny``: a smoke run for a shared 2-core CPU (one brain task at 32 px, 40 train / 40 val per
  class; DM 60 iterations; 1 eval net x 30 epochs; loss attack 1 model x 30 epochs). Minutes on an
  idle box, and the numbers are noisy: a check that the pipeline runs, not the benchmark.
* ``--cpu``: what the shared 2-core CPU affords (about 2 CPU-hours for all rows, one thread): Fashion-MNIST
  only, 200 train images a class (1,833 members after the val slice; 2,167 non-members: val and
  test), DM 300 iterations, DP-DM T = 20, evaluation 2 nets x 100 epochs, loss attack 2 models x
  100 epochs, 1,000 bootstrap resamples.
* ``--full``: the issue's run: Fashion-MNIST and two brain tasks at 300 train / 300 val per class,
  DM 2000 iterations at IPC 10, DP-DM with T = 50, evaluation 5 nets x 300 epochs, loss attack
  4 models, LiRA with 8 shadows on one brain task (``--lira``). Hours on a CPU; a GPU recommended.

    OMP_NUM_THREADS=2 nice python benchmarks/privacy.py --tiny
    OMP_NUM_THREADS=1 nice python benchmarks/privacy.py --cpu
    python benchmarks/privacy.py --full --device cuda --lira
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "privacy"
RESULTS = ROOT / "benchmarks" / "results"
ROWS = ("full", "random", "dm_real", "dm_noise", "dp_eps1", "dp_eps4", "dp_eps8", "dp_epsinf")
DP_EPSILONS = {"dp_eps1": 1.0, "dp_eps4": 4.0, "dp_eps8": 8.0, "dp_epsinf": float("inf")}
log = logging.getLogger("benchmarks.privacy")


@dataclass(frozen=True)
class Preset:
    """Everything that decides a cell's numbers apart from the task and the row."""

    name: str
    train_per_class: int
    val_per_class: int
    test_per_class: int
    fmnist_per_class: int
    ipc: int
    dm_iterations: int
    batch_real: int
    dp_queries: int
    dp_clip: float
    eval_models: int
    eval_epochs: int
    mia_models: int
    mia_epochs: int
    full_steps: int
    bootstrap: int
    shadows: int
    seed: int = 0


PRESETS = {
    "tiny": Preset(name="tiny", train_per_class=40, val_per_class=40, test_per_class=20, fmnist_per_class=40, ipc=10,
                   dm_iterations=60, batch_real=32, dp_queries=10, dp_clip=1.0, eval_models=1, eval_epochs=30,
                   mia_models=1, mia_epochs=30, full_steps=60, bootstrap=300, shadows=4),
    # what the shared 2-core CPU affords in about two CPU-hours: Fashion-MNIST only (more
    # units than the brain tasks, so the same epsilon costs less noise), 200 train images a class
    "cpu": Preset(name="cpu", train_per_class=200, val_per_class=200, test_per_class=100, fmnist_per_class=200,
                  ipc=10, dm_iterations=300, batch_real=64, dp_queries=20, dp_clip=1.0, eval_models=2,
                  eval_epochs=100, mia_models=2, mia_epochs=100, full_steps=300, bootstrap=1000, shadows=4),
    "full": Preset(name="full", train_per_class=300, val_per_class=300, test_per_class=100, fmnist_per_class=300,
                   ipc=10, dm_iterations=2000, batch_real=256, dp_queries=50, dp_clip=1.0, eval_models=5,
                   eval_epochs=300, mia_models=4, mia_epochs=300, full_steps=1000, bootstrap=1000, shadows=8),
}
TASKS = {
    "aal_lobes4": "AAL -> 4 cerebral lobes, 32 px brain patches",
    "brodmann": "Brodmann areas -> 8 groups, 32 px brain patches",
    "fmnist": "Fashion-MNIST (Debian dataset-fashion-mnist), 28 px, 10 classes",
}


def task_data(task: str, preset: Preset, work: Path) -> Path:
    """The task's ``data.h5``, built once per preset."""
    folder = work / preset.name / task
    path = folder / "data.h5"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "examples"))
    if task == "fmnist":
        from fashion_mnist import build_image_set

        from medcondense import store

        image_set = build_image_set(limit_train=preset.fmnist_per_class, limit_test=preset.fmnist_per_class,
                                    seed=preset.seed, out_path=path)
        store.write(path, image_set, overwrite=True)
    else:
        from brain_patches import build_task

        build_task(task, folder, formats=("h5",), train_per_class=preset.train_per_class,
                   val_per_class=preset.val_per_class, test_per_class=preset.test_per_class, seed=preset.seed,
                   overwrite=True)
    return path


def _game(task: str) -> dict[str, Any]:
    """Who plays: brain tasks use val (same hemisphere) and image units (one subject)."""
    if task == "fmnist":
        return {"nonmembers": ["val", "test"], "unit": "image"}
    return {"nonmembers": ["val"], "unit": "image"}


def cell_key(data_hash: str, row: str, preset: Preset, lira: bool) -> str:
    payload = {"data": data_hash, "row": row, "preset": asdict(preset), "lira": lira, "version": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _machine(device: str) -> dict:
    import torch

    return {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _distill(task: str, data: Path, row: str, preset: Preset, device: str) -> tuple[Path, dict]:
    from medcondense.config import DistillConfig
    from medcondense.distill import pipeline as distill_pipeline

    out = data.parent / f"{row}{_ipc_suffix(preset)}.h5"
    options: dict[str, Any] = dict(input=str(data), output=str(out), ipc=preset.ipc, device=device, seed=preset.seed,
                                   overwrite=True)
    if row == "random":
        options.update(method="random")
    else:
        options.update(method="dm", iterations=preset.dm_iterations, batch_real=preset.batch_real)
        if row == "dm_noise":
            options.update(init="noise")
        if row in DP_EPSILONS:
            options.update(dp_epsilon=DP_EPSILONS[row], dp_delta=_delta(preset), dp_unit="image",
                           dp_queries=preset.dp_queries, dp_clip=preset.dp_clip)
    summary = distill_pipeline.run(DistillConfig(**options))
    return out, summary


def _ipc_suffix(preset: Preset) -> str:
    """File-name suffix of a cell run at another IPC than its preset's (``--ipc``): none otherwise,
    so the preset's own cells keep their names; data and cached baselines stay shared."""
    return "" if preset.ipc == PRESETS[preset.name].ipc else f"_ipc{preset.ipc}"


def _delta(preset: Preset) -> float:
    """1e-5, or smaller than 1 / (members) where the set is small."""
    return 1e-5


def _evaluate(data: Path, syn: Path | None, preset: Preset, device: str) -> dict:
    from medcondense.config import EvaluateConfig
    from medcondense.evaluate import pipeline as evaluate_pipeline

    if syn is None:
        from medcondense.evaluate.baselines import real_baselines
        from medcondense.evaluate.data import load_real

        full, _ = real_baselines(load_real(data), ipcs=[], models=preset.eval_models, epochs=preset.eval_epochs,
                                 full_steps=preset.full_steps, device=device, seed=preset.seed, which=("full",))
        return full["accuracy"]
    report = evaluate_pipeline.run(EvaluateConfig(inputs=[str(syn)], real=str(data), models=preset.eval_models,
                                                  epochs=preset.eval_epochs, baselines=[], device=device,
                                                  seed=preset.seed))
    return report["results"][0]["metrics"]["accuracy"]


def _audit(task: str, data: Path, syn: Path, preset: Preset, device: str, lira: bool) -> dict:
    from medcondense.config import ScoreConfig
    from medcondense.score import pipeline as score_pipeline

    game = _game(task)
    result = score_pipeline.run(ScoreConfig(
        data=str(data), syn=str(syn), ipc=[], device=device, seed=preset.seed, mia=True,
        mia_models=preset.mia_models, mia_epochs=preset.mia_epochs, mia_nonmembers=game["nonmembers"],
        mia_unit=game["unit"], mia_shadows=preset.shadows if lira else 0, mia_bootstrap=preset.bootstrap,
        full_steps=preset.full_steps,
    ))
    return result["syn"]["privacy"]


def run_cell(task: str, data: Path, row: str, preset: Preset, device: str, lira: bool, note: str) -> dict:
    """Distil, evaluate and audit one row of one task."""
    started = time.process_time(), time.perf_counter()
    cell: dict[str, Any] = {"task": task, "row": row, "preset": preset.name, "ipc": preset.ipc,
                            "machine": _machine(device), "note": note}
    if row == "full":
        # the full row's MIA numbers are the loss attack's `full` artefact of the random row's audit
        syn, summary = _distill(task, data, "random", preset, device)
        cell["accuracy"] = _evaluate(data, None, preset, device)
    else:
        syn, summary = _distill(task, data, row, preset, device)
        cell["accuracy"] = _evaluate(data, syn, preset, device)
        cell["dp"] = summary.get("dp")
    privacy = _audit(task, data, syn, preset, device, lira and row in ("dm_real", "dp_eps8"))
    artefact = "full" if row == "full" else "synthetic"
    cell["mia"] = {attack: per[artefact] for attack, per in privacy["mia"].items() if artefact in per}
    cell["mia_noise_floor"] = {attack: per["noise"]["auc_ci"] for attack, per in privacy["mia"].items() if "noise" in per}
    cell["game"] = privacy["mia_game"]
    cell["exchangeable"] = privacy["mia_exchangeable"]
    cell["cpu_seconds"] = round(time.process_time() - started[0], 1)
    cell["seconds"] = round(time.perf_counter() - started[1], 1)
    return cell


# --------------------------------------------------------------------------- report


def _ci(block: dict | None, key: str) -> str:
    if not block:
        return "-"
    lo, hi = block[f"{key}_ci"]
    return f"{block[key]:.3f} [{lo:.2f}, {hi:.2f}]"


def markdown_table(cells: list[dict]) -> str:
    lines = ["| task | row | accuracy | set_distance AUC [CI] | set_distance TPR@1% [CI] | loss AUC [CI] | "
             "loss TPR@1% [CI] | lira AUC | members / non-members | epsilon | delta | sigma | T | C | s |",
             "|" + "---|" * 15]
    for c in cells:
        acc = c["accuracy"]
        mia = c["mia"]
        dp = c.get("dp") or {}
        lines.append(
            f"| {c['task']} | {c['row']}{'' if c['row'] == 'full' else ' IPC ' + str(c.get('ipc', PRESETS[c['preset']].ipc))} | "
            f"{acc['mean']:.3f} ± {acc['std']:.3f} | "
            f"{_ci(mia.get('set_distance'), 'auc') if c['row'] != 'full' else '(1 by definition)'} | "
            f"{_ci(mia.get('set_distance'), 'tpr_at_1pct_fpr') if c['row'] != 'full' else '-'} | "
            f"{_ci(mia.get('loss'), 'auc')} | {_ci(mia.get('loss'), 'tpr_at_1pct_fpr')} | "
            f"{_ci(mia.get('lira'), 'auc')} | {c['game']['members']} / {c['game']['nonmembers']} | "
            f"{dp.get('epsilon', '-')} | {dp.get('delta', '-')} | "
            f"{round(dp['noise_multiplier'], 3) if dp.get('noise_multiplier') is not None else '-'} | "
            f"{dp.get('queries', '-')} | {dp.get('clip', '-')} | {c['seconds']:.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tiny", dest="preset", action="store_const", const="tiny", help="smoke run (default)")
    which.add_argument("--cpu", dest="preset", action="store_const", const="cpu",
                       help="Fashion-MNIST sized for a 2-core CPU (about 2 CPU-hours)")
    which.add_argument("--full", dest="preset", action="store_const", const="full", help="the issue's run (hours)")
    p.set_defaults(preset="tiny")
    p.add_argument("--tasks", nargs="+", default=None, choices=list(TASKS),
                   help="default: tiny aal_lobes4; cpu fmnist; full aal_lobes4 brodmann fmnist")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--ipc", type=int, default=None,
                   help="images per class instead of the preset's (cells cached apart; data and baselines shared)")
    p.add_argument("--lira", action="store_true", help="add LiRA (shadows of the preset) on dm_real and dp_eps8")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", type=Path, default=WORK)
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/privacy[_ipcN].json")
    p.add_argument("--note", default="")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--report-only", action="store_true", help="only rebuild the table from the cached cells")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from medcondense import store

    preset = PRESETS[args.preset]
    if args.ipc is not None:
        preset = replace(preset, ipc=args.ipc)
    tasks = args.tasks or {"tiny": ["aal_lobes4"], "cpu": ["fmnist"]}.get(preset.name, ["aal_lobes4", "brodmann", "fmnist"])
    cells = []
    for task in tasks:
        data = task_data(task, preset, args.workdir)
        data_hash = store.read(data).attrs.get("content_hash") or store.content_hash(store.read(data))
        for row in args.rows:
            path = args.workdir / preset.name / task / f"cell_{row}{_ipc_suffix(preset)}.json"
            key = cell_key(data_hash, row, preset, args.lira)
            cell = None
            if path.exists() and not args.overwrite:
                cached = json.loads(path.read_text())
                cell = cached if cached.get("key") == key else None
            if cell is None and args.report_only:
                continue
            if cell is None:
                log.info("%s %s: running", task, row)
                cell = {**run_cell(task, data, row, preset, args.device, args.lira, args.note), "key": key}
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(json.dumps(cell, indent=1, default=str))
                os.replace(tmp, path)
            cells.append(cell)
    table = markdown_table(cells)
    if args.out is None:
        args.out = RESULTS / f"privacy{_ipc_suffix(preset)}.json"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"preset": asdict(preset), "tasks": {t: TASKS[t] for t in tasks}, "cells": cells}
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, args.out)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
