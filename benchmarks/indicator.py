#!/usr/bin/env python
"""Does the paper's indicator (or a cheaper proxy) predict what distillation gains?

For each task (the brain-region family of ``examples/brain_patches.py`` plus Fashion-MNIST from
``examples/fashion_mnist.py``; every task's test images are disjoint from its train images):

1. ``medcondense.score.pipeline.run``: random-subset accuracy relative to full data (the indicator) and
   the random-ConvNet proxies, at each IPC;
2. ``medcondense.distill.pipeline.run`` with DM and DC at each IPC;
3. train ConvNets on each distilled set with the indicator's protocol and test them:
   gain = distilled accuracy - random-subset accuracy (the better method's gain is the target);
4. per IPC (pooling IPCs inflates rank correlations), ``scipy.stats.spearmanr`` between every
   predictor and the gain, with a bootstrap 95 % interval over tasks.

Writes ``benchmarks/results/indicator.json`` (its ``measured`` list is what
``medcondense score --calibrate`` refits the predictor from) and ``indicator.md``. Finished tasks
are cached in ``--workdir/<task>/bench.json``, so an interrupted run continues where it stopped.

    python benchmarks/indicator.py --quick            # 2-core CPU: small sets, few iterations
    python benchmarks/indicator.py --paper --device cuda
    medcondense score --calibrate benchmarks/results/indicator.json -o src/medcondense/data/calibration.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.indicator")
FASHION = "fashion_mnist"
BASE_PREDICTORS = ("random_rel", "random_accuracy")


@dataclass
class Settings:
    """One benchmark configuration (``--quick`` or ``--paper``)."""

    train_per_class: int
    test_per_class: int
    repeats: int
    epochs: int
    full_steps: int
    eval_models: int
    iterations: dict[str, int]
    batch_real: int | None
    ipcs: tuple[int, ...] = (1, 10)
    methods: tuple[str, ...] = ("dm", "dc")
    # A method is distilled only at IPCs up to this (absent: every IPC). On a CPU, DC at IPC 10 costs
    # minutes per iteration (10 outer steps x 50 inner steps), so the quick preset measures it at IPC 1.
    method_max_ipc: dict[str, int] = dataclasses.field(default_factory=dict)

    def methods_at(self, ipc: int) -> tuple[str, ...]:
        """The methods distilled at ``ipc``."""
        return tuple(m for m in self.methods if ipc <= self.method_max_ipc.get(m, ipc))


PRESETS = {
    # A shared 2-core CPU, ~5 min a task: 25 train images a class, 40 epochs, full baseline 40 SGD
    # steps, 40 DM / 10 DC iterations with 16 real images a class, DC at IPC 1 only.
    "quick": Settings(train_per_class=25, test_per_class=25, repeats=2, epochs=40, full_steps=40,
                      eval_models=2, iterations={"dm": 40, "dc": 10, "idm": 10}, batch_real=16, method_max_ipc={"dc": 1}),
    # #17's study: budgets where gains are not noise (>= 100 train images a class, >= 300 test images
    # a task with 4+ classes); DM and IDM; run it once per seed (--seed 0, --seed 1, separate --out)
    # and refit with `score --calibrate a.json --calibrate b.json -o FILE`. CPU hours: for a longer run or a GPU.
    "study": Settings(train_per_class=100, test_per_class=75, repeats=2, epochs=100, full_steps=300,
                      eval_models=2, iterations={"dm": 200, "idm": 60, "dc": 10}, batch_real=64,
                      methods=("dm", "idm")),
    # GPU: the reference's evaluation epochs and iteration counts (DM 20000 takes hours per task).
    "paper": Settings(train_per_class=300, test_per_class=100, repeats=5, epochs=300, full_steps=3000,
                      eval_models=5, iterations={"dm": 20000, "dc": 1000}, batch_real=256),
}


def _load_example(name: str) -> Any:
    """Import ``examples/<name>.py`` (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def available_tasks() -> list[str]:
    """Brain tasks whose template files are installed, then Fashion-MNIST if its files are."""
    brain = _load_example("brain_patches")
    tasks = [row["name"] for row in brain.describe_tasks(None) if row["available"]]
    fashion = _load_example("fashion_mnist")
    try:
        fashion.find_files(fashion.DEFAULT_DIR)
        tasks.append(FASHION)
    except FileNotFoundError as exc:
        log.warning("skipping Fashion-MNIST: %s", exc)
    return tasks


def build_data(task: str, folder: Path, settings: Settings, seed: int) -> Path:
    """Write the task's ``data.h5`` into ``folder`` (reused when present) and return its path."""
    from medcondense import store

    path = folder / "data.h5"
    if path.exists():
        return path
    if task == FASHION:
        fashion = _load_example("fashion_mnist")
        image_set = fashion.build_image_set(fashion.DEFAULT_DIR, limit_train=settings.train_per_class,
                                            limit_test=settings.test_per_class, seed=seed, out_path=path)
        store.write(path, image_set)
        return path
    brain = _load_example("brain_patches")
    summary = brain.build_task(task, folder, formats=("h5",), train_per_class=settings.train_per_class,
                               test_per_class=settings.test_per_class, seed=seed)
    return Path(summary["outputs"]["h5"])


def syn_accuracy(syn_path: Path, data_path: Path, settings: Settings, device: str, seed: int) -> dict:
    """Test accuracy of ConvNets trained on a distilled set, with the random baseline's protocol.

    Same trainer, epochs, standardization and seeds (model k: ``seed + k``) as
    :func:`medcondense.evaluate.baselines.real_baselines`, which gives the indicator's random-subset accuracy.
    """
    from medcondense.device import resolve_device
    from medcondense.evaluate.data import load_input, load_real
    from medcondense.evaluate.protocol import evaluate_images
    from medcondense.train import TrainSettings

    real = load_real(data_path)
    syn = load_input(syn_path, real)
    summary = evaluate_images(syn.train_x, syn.train_y, real.test_x, real.test_y, models=settings.eval_models,
                              settings=TrainSettings(epochs=settings.epochs), device=resolve_device(device), seed=seed,
                              num_classes=len(real.class_names))
    return {"mean": summary["accuracy"]["mean"], "std": summary["accuracy"]["std"]}


def distil(data_path: Path, method: str, ipc: int, settings: Settings, device: str, seed: int) -> Path:
    """Run the distill stage (re-runs with identical options are skipped by distill itself)."""
    from medcondense.config import DistillConfig
    from medcondense.distill import pipeline
    from medcondense.errors import AlreadyDone

    out = data_path.parent / f"syn_{method}_ipc{ipc}.h5"
    config = DistillConfig(input=str(data_path), output=str(out), method=method, ipc=ipc, preset="quick",
                           iterations=settings.iterations[method], batch_real=settings.batch_real,
                           device=device, seed=seed, overwrite=True)
    try:
        pipeline.run(config)
    except AlreadyDone:
        pass
    return out


def measure_task(task: str, workdir: Path, settings: Settings, device: str, seed: int) -> dict:
    """Score, distil and evaluate one task; cached in ``<workdir>/<task>/bench.json``."""
    from medcondense.config import ScoreConfig
    from medcondense.score import pipeline as score

    folder = workdir / task
    cache = folder / "bench.json"
    key = json.dumps(dataclasses.asdict(settings), sort_keys=True) + f"|{device}|{seed}"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            log.info("%s: cached", task)
            return cached
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = build_data(task, folder, settings, seed)
    # the study compares every candidate, the trained indicator too: score's default (fast) trains nothing
    scored = score.run(ScoreConfig(data=str(data), ipc=list(settings.ipcs), repeats=settings.repeats,
                                   epochs=settings.epochs, full_steps=settings.full_steps, device=device, seed=seed,
                                   indicator="full"))
    score_seconds = time.perf_counter() - started
    rows = []
    for row in scored["ipc"]:
        features = {"random_rel": row["random_rel"], "random_accuracy": row["random_accuracy"]["mean"]}
        features.update({k: v["value"] for k, v in scored["proxies"].items()})
        features.update({k: v["value"] for k, v in row["proxies"].items()})
        costs = {k: v["seconds"] for k, v in {**scored["proxies"], **row["proxies"]}.items()}
        per_method = {}
        for method in settings.methods_at(row["ipc"]):
            t0 = time.perf_counter()
            syn = distil(data, method, row["ipc"], settings, device, seed)
            acc = syn_accuracy(syn, data, settings, device, seed)
            per_method[method] = {"accuracy": acc, "gain": acc["mean"] - row["random_accuracy"]["mean"],
                                  "seconds": round(time.perf_counter() - t0, 2)}
        rows.append({
            "dataset": task, "ipc": row["ipc"], "classes": len(scored["classes"]), "features": features, "proxy_seconds": costs,
            "gain": max(m["gain"] for m in per_method.values()), "per_method": per_method,
            "random_accuracy": row["random_accuracy"], "full_accuracy": scored["full_data"]["accuracy"],
        })
    result = {"key": key, "task": task, "rows": rows, "score_seconds": round(score_seconds, 2),
              "indicator_seconds": scored["indicator_seconds"], "embedding_seconds": scored["embedding_seconds"],
              "seconds": round(time.perf_counter() - started, 2)}
    _write_json(cache, result)
    return result


def spearman_with_ci(x: Sequence[float], y: Sequence[float], n_boot: int, seed: int) -> dict:
    """Spearman's rho and a percentile bootstrap 95 % interval (resampling tasks)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None, "ci95": None, "n": int(x.size)}
    rho, p = spearmanr(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, x.size, x.size)
        if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:
            boots.append(spearmanr(x[idx], y[idx])[0])
    ci = [float(np.nanpercentile(boots, 2.5)), float(np.nanpercentile(boots, 97.5))] if boots else None
    return {"rho": float(rho), "p": float(p), "ci95": ci, "n": int(x.size)}


def correlations(measured: list[dict], n_boot: int, seed: int) -> dict:
    """Per IPC: Spearman of every predictor with the gain (best method and each method)."""
    out: dict[str, Any] = {}
    for ipc in sorted({r["ipc"] for r in measured}):
        rows = [r for r in measured if r["ipc"] == ipc]
        predictors = sorted({k for r in rows for k in r["features"]})
        targets = {"best": [r["gain"] for r in rows]}
        for method in sorted(set.intersection(*(set(r["per_method"]) for r in rows))):
            targets[method] = [r["per_method"][method]["gain"] for r in rows]
        out[str(ipc)] = {
            name: {target: spearman_with_ci([r["features"].get(name, math.nan) for r in rows], gains, n_boot, seed)
                   for target, gains in targets.items()}
            for name in predictors
        }
    return out


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def _correlation_lines(report: dict) -> list[str]:
    methods = report["settings"]["methods"]
    lines = ["| IPC | predictor | rho (best) | 95 % CI | " + " | ".join(f"rho ({m})" for m in methods) + " | cost s |",
             "|---|---|---|---|" + "---|" * len(methods) + "---|"]
    for ipc, preds in report["correlations"].items():
        costs: dict[str, list[float]] = {}
        for r in report["measured"]:
            if str(r["ipc"]) == ipc:
                for k, v in r.get("proxy_seconds", {}).items():
                    costs.setdefault(k, []).append(v)
        for name, by_target in preds.items():
            best = by_target["best"]
            rho = "n/a" if best["rho"] is None else f"{best['rho']:+.2f}"
            ci = "n/a" if not best["ci95"] else f"[{best['ci95'][0]:+.2f}, {best['ci95'][1]:+.2f}]"
            per = " | ".join("—" if m not in by_target or by_target[m]["rho"] is None else f"{by_target[m]['rho']:+.2f}"
                             for m in methods)
            cost = f"{np.mean(costs[name]):.3f}" if name in costs else "training"
            lines.append(f"| {ipc} | {name} | {rho} | {ci} | {per} | {cost} |")
    return lines


def _task_lines(report: dict) -> list[str]:
    methods = report["settings"]["methods"]
    proxies = sorted({k for r in report["measured"] for k in r["features"]} - set(BASE_PREDICTORS))
    lines = ["| task | classes | IPC | full acc | random acc | random/full | " + " | ".join(proxies) + " | " +
             " | ".join(f"{m} acc" for m in methods) + " | best gain |",
             "|---|---|---|---|---|---|" + "---|" * (len(proxies) + len(methods)) + "---|"]
    for r in report["measured"]:
        prox = " | ".join(_fmt(r["features"].get(k)) for k in proxies)
        accs = " | ".join(_fmt(r["per_method"][m]["accuracy"]["mean"]) if m in r["per_method"] else "—" for m in methods)
        lines.append(f"| {r['dataset']} | {r.get('classes', '?')} | {r['ipc']} | {r['full_accuracy']:.3f} | "
                     f"{r['random_accuracy']['mean']:.3f} | {r['features']['random_rel']:.3f} | {prox} | {accs} | "
                     f"{r['gain']:+.3f} |")
    return lines


def markdown(report: dict) -> str:
    """The correlation table and the per-task numbers as markdown."""
    s = report["settings"]
    limits = ", ".join(f"{m} only at IPC <= {k}" for m, k in s.get("method_max_ipc", {}).items())
    device = report.get("device_name", report["device"])
    lines = [f"# Indicator benchmark ({report['preset']}, {len(report['tasks'])} tasks, {device})", "",
             f"Settings: {s['train_per_class']} train / {s['test_per_class']} test images a class, "
             f"{s['epochs']} epochs, full baseline {s['full_steps']} SGD steps, {s['repeats']} random subsets, "
             f"{s['eval_models']} models per distilled set, iterations {s['iterations']}, batch_real {s['batch_real']}"
             + (f", {limits}" if limits else "") + f"; the tasks took {sum(report['task_seconds'].values()) / 60:.1f} min "
             "in all (each task's own time, cached runs included).", "",
             "Spearman rho between each predictor and the measured gain of distillation over a random real "
             "subset (best of the methods measured at that IPC), per IPC, with a bootstrap 95 % interval over "
             "tasks. A good predictor of *little* gain has a strongly negative rho.", ""]
    lines += _correlation_lines(report) + [""] + _task_lines(report)
    if report.get("loo_mae"):
        lines += ["", "Leave-one-dataset-out MAE of a one-feature line per IPC (what `score` states as its "
                  "error; the constant predicts the other tasks' mean gain). The fast indicator is the "
                  "training-free candidate with the lowest error.", "",
                  "| IPC | feature | LOO MAE | constant |", "|---|---|---|---|"]
        for ipc, rows in sorted(report["loo_mae"].items(), key=lambda kv: int(kv[0])):
            for name, row in sorted(rows.items(), key=lambda kv: kv[1]["loo_mae"]):
                lines.append(f"| {ipc} | {name} | {row['loo_mae']:.3f} | {row['loo_mae_constant']:.3f} |")
    return "\n".join(lines) + "\n"


def loo_errors(measured: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per IPC and candidate feature, the leave-one-dataset-out MAE of its calibration line
    (``predictor.fit_calibration``, the model ``score`` ships) and the constant predictor's."""
    from medcondense.score import predictor

    names = sorted({name for row in measured for name in row["features"]})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        fitted = predictor.fit_calibration(measured, [name])
        for ipc, model in fitted["per_ipc"].items():
            out.setdefault(ipc, {})[name] = {"loo_mae": model["loo_mae"], "loo_mae_constant": model["loo_mae_constant"]}
    return out


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="preset", action="store_const", const="quick", help="CPU settings (default)")
    mode.add_argument("--paper", dest="preset", action="store_const", const="paper", help="reference settings (GPU)")
    mode.add_argument("--study", dest="preset", action="store_const", const="study",
                      help="#17's budgets: 100 train images a class, DM and IDM (CPU hours; run once per --seed)")
    parser.set_defaults(preset="quick")
    parser.add_argument("--tasks", help="comma-separated task names [default: every installed brain task + fashion_mnist]")
    parser.add_argument("--ipc", default=None, help="comma-separated IPCs [default: 1,10]")
    parser.add_argument("--methods", default=None, help="comma-separated distill methods [default: dm,dc]")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "indicator.json")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a setting, e.g. --set epochs=20 --set iterations.dm=30")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """The preset with --ipc/--methods/--set applied."""
    preset = PRESETS[args.preset]
    settings = dataclasses.replace(preset, iterations=dict(preset.iterations), method_max_ipc=dict(preset.method_max_ipc))
    if args.ipc:
        settings.ipcs = tuple(int(v) for v in args.ipc.split(","))
    if args.methods:
        settings.methods = tuple(v.strip() for v in args.methods.split(","))
    for item in args.overrides:
        key, _, value = item.partition("=")
        if key.startswith("iterations."):
            settings.iterations[key.split(".", 1)[1]] = int(value)
        elif key.startswith("method_max_ipc."):
            settings.method_max_ipc[key.split(".", 1)[1]] = int(value)
        elif key in {f.name for f in dataclasses.fields(Settings)}:
            setattr(settings, key, None if value == "none" else int(value))
        else:
            raise SystemExit(f"error: --set {item}: unknown setting {key!r}")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        import medcondense.distill.pipeline  # noqa: F401  (the distill engine this benchmark needs)
    except ImportError as exc:
        print(f"error: the distill engine is not available ({exc}); install medcondense with its distill stage",
              file=sys.stderr)
        return 1
    settings = settings_from(args)
    tasks = args.tasks.split(",") if args.tasks else available_tasks()
    started = time.time()
    results = []
    for i, task in enumerate(tasks, 1):
        log.info("task %d/%d: %s", i, len(tasks), task)
        results.append(measure_task(task, args.workdir, settings, args.device, args.seed))
    measured = [row for r in results for row in r["rows"]]
    from medcondense.device import describe_device, resolve_device

    report = {
        "preset": args.preset, "settings": dataclasses.asdict(settings), "device": args.device,
        "device_name": describe_device(resolve_device(args.device)), "cpu_count": os.cpu_count(), "seed": args.seed,
        "tasks": tasks, "wall_time_s": round(time.time() - started, 1),
        "task_seconds": {r["task"]: r["seconds"] for r in results},
        "correlations": correlations(measured, args.bootstrap, args.seed),
        "loo_mae": loo_errors(measured),
        "measured": measured,
    }
    _write_json(args.out, report)
    md = markdown(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)  # the benchmark's final table
    return 0


if __name__ == "__main__":
    sys.exit(main())
