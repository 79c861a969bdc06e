"""torchrun speed-up: distill (DM, DC, DSA) and evaluate on W processes against one process.

Every cell is a real command line, ``python -m medcondense ...`` for one process and
``torchrun --standalone --nproc_per_node W -m medcondense ...`` for W, on a random real set
written once (speed does not depend on content). distill cells report rank 0's seconds per outer
iteration over the whole loop (process start-up, reading and writing excluded; a compiled run's
first iteration included on both sides), evaluate cells the stage's wall time. Each cell's result is cached in the results JSON and skipped on a rerun
(``--redo`` to measure again), so an interrupted benchmark resumes.

Goals (issue #14), printed beside the measurements:

* DM: speed-up >= 0.7 x K / ceil(K / W) for K classes on W ranks (10 classes on 4 GPUs: >= 2.3x);
* evaluate with 5 nets on 5 GPUs: >= 4x;
* DC/DSA: against the bound 1 / ((1 - f) / (K / ceil(K / W)) + f), f the inner loop's share of
  an iteration (measured here by a one-process run with ``--inner-loop 0``);
* one rank under torchrun within 5 % of a plain run.

On a multi-GPU machine (the run this script is for; nothing here has been measured on GPUs)::

    python benchmarks/distributed.py --preset gpu

On a CPU (what docs/results.md reports for the project's shared 2-core machine)::

    python benchmarks/distributed.py --preset cpu
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "distributed.json"
SRC = HERE.parent / "src"

PRESETS = {
    # the GPU measurement: DM paper preset IPC 50 (batch_real 256), 10 classes, 32 px
    "gpu": dict(device="cuda", classes=10, size=32, per_class=300, ipc=50, iterations=30, batch_real=256,
                dc_ipc=10, dc_iterations=2, worlds=[1, 2, 4], eval_models=5, eval_epochs=300, eval_worlds=[1, 5],
                methods=["dm", "dc", "dsa"], one_rank=True, extra=[]),
    # what a shared 2-core CPU affords in a few minutes
    "cpu": dict(device="cpu", classes=4, size=16, per_class=64, ipc=10, iterations=15, batch_real=64,
                dc_ipc=1, dc_iterations=3, worlds=[1, 2], eval_models=4, eval_epochs=30, eval_worlds=[1, 2],
                methods=["dm", "dsa"], one_rank=True, extra=["--compile", "off"]),
}


def write_real_set(path: Path, classes: int, size: int, per_class: int) -> None:
    """A random K-class real set (train ``per_class``, test a quarter of it per class)."""
    import numpy as np

    sys.path.insert(0, str(SRC))
    from medcondense import store

    rng = np.random.default_rng(0)
    test = max(4, per_class // 4)
    labels = np.repeat(np.arange(classes), per_class + test)
    split = np.tile(np.r_[np.zeros(per_class), np.full(test, 2)], classes).astype(np.uint8)
    images = rng.random((labels.size, 1, size, size), dtype=np.float32)
    images[np.arange(labels.size), 0, labels % size, :] += 0.5  # a faint class signal for evaluate
    n = labels.size
    store.write(path, store.ImageSet(
        images=np.clip(images, 0, 1), labels=labels.astype(np.int64), split=split,
        class_names=[f"c{k}" for k in range(classes)], kind="real",
        meta={"patient_key": np.array([f"p{i}" for i in range(n)], dtype=object)},
        attrs={"modality": "MR", "laterality": True,
               "normalization": {"method": "window", "params": {}, "train_mean": [0.5], "train_std": [0.3]}},
    ))


def _command(world: int, launcher: str, args: list[str]) -> list[str]:
    if launcher == "plain":
        return [sys.executable, "-m", "medcondense", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
            "-m", "medcondense", *args]


def run_cell(world: int, launcher: str, args: list[str], workdir: Path, threads: int | None = None) -> dict:
    """Run one command line; its JSON summary, wall time and the CPU time of its processes."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.run(_command(world, launcher, [*args, "--json", "-q", "--overwrite"]), cwd=workdir, env=env,
                          capture_output=True, text=True)
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"cell failed ({' '.join(args)}): {proc.stderr[-2000:]}")
    summary = json.loads(proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"summary": summary, "command_wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def cells(preset: dict) -> list[dict]:
    """Every measurement of a preset: (name, world, launcher, stage arguments)."""
    out = []
    device = ["--device", preset["device"]]
    for method in preset["methods"]:
        loops = method in ("dc", "dsa")
        ipc = preset["dc_ipc"] if loops else preset["ipc"]
        iterations = preset["dc_iterations"] if loops else preset["iterations"]
        base = ["distill", "data.h5", "--method", method, "--ipc", str(ipc), "--iterations", str(iterations),
                "--batch-real", str(preset["batch_real"]), "--checkpoint-every", "0", *device, *preset["extra"]]
        for world in preset["worlds"]:
            launcher = "plain" if world == 1 else "torchrun"
            out.append({"name": f"{method} W={world}", "kind": "distill", "method": method, "world": world,
                        "launcher": launcher, "args": [*base, "-o", f"{method}_w{world}.h5"]})
        if method == "dm":  # one process with one thread: what each torchrun rank gets on a CPU
            out.append({"name": f"{method} W=1 1-thread", "kind": "distill", "method": method, "world": 1,
                        "launcher": "plain", "threads": 1, "args": [*base, "-o", f"{method}_w1t1.h5"]})
        if preset["one_rank"] and method == "dm":
            out.append({"name": f"{method} torchrun W=1", "kind": "distill", "method": method, "world": 1,
                        "launcher": "torchrun", "args": [*base, "-o", f"{method}_t1.h5"]})
        if loops:
            out.append({"name": f"{method} W=1 inner-loop 0", "kind": "inner0", "method": method, "world": 1,
                        "launcher": "plain", "args": [*base, "--inner-loop", "0", "-o", f"{method}_inner0.h5"]})
    for world in preset["eval_worlds"]:
        out.append({"name": f"evaluate W={world}", "kind": "evaluate", "method": "evaluate", "world": world,
                    "launcher": "plain" if world == 1 else "torchrun",
                    "args": ["evaluate", "data.h5", "--real", "data.h5", "--models", str(preset["eval_models"]),
                             "--epochs", str(preset["eval_epochs"]), "--baselines", "none", *device,
                             "-o", f"eval_w{world}.json"]})
    return out


def _seconds(cell: dict, result: dict) -> float:
    summary = result["summary"]
    if cell["kind"] == "evaluate":
        return float(summary["provenance"]["wall_time_s"])
    return float(summary["seconds_per_iteration"])


def report(preset: dict, results: dict) -> list[dict]:
    """Speed-ups against the one-process cell of the same method, with each goal."""
    rows = []
    classes = preset["classes"]
    for name, entry in results.items():
        cell, seconds = entry["cell"], entry["seconds"]
        if cell["kind"] == "inner0":
            continue
        single = results.get(f"{cell['method']} W=1" if cell["kind"] != "evaluate" else "evaluate W=1")
        if name.endswith("1-thread"):
            single = None
        speedup = single["seconds"] / seconds if single else None
        world = cell["world"]
        bound = classes / math.ceil(classes / world)
        goal = None
        if cell["kind"] == "evaluate" and world > 1:
            models = preset["eval_models"]
            goal = f">= {0.8 * models / math.ceil(models / world):.2f}x (0.8 x nets / ceil(nets / W))"
        elif cell["method"] == "dm" and world > 1:
            goal = f">= {0.7 * bound:.2f}x (0.7 x {bound:.2f})"
        elif cell["method"] in ("dc", "dsa") and world > 1:
            inner0 = results.get(f"{cell['method']} W=1 inner-loop 0")
            if inner0 and single:
                share = max(0.0, 1 - inner0["seconds"] / single["seconds"])
                goal = f"bound {1 / ((1 - share) / bound + share):.2f}x (inner-loop share {share:.2f})"
        elif "torchrun W=1" in name:
            goal = ">= 0.95x (one rank within 5 % of a plain run)"
        rows.append({"cell": name, "seconds": seconds, "speedup": speedup, "goal": goal,
                     "cpu_s": entry["cpu_s"], "command_wall_s": entry["command_wall_s"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--workdir", type=Path, default=HERE / "results" / "distributed_work")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*", help="cell names to run (default: all)")
    parser.add_argument("--redo", action="store_true", help="measure cached cells again")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    workdir = args.workdir / args.preset
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data.h5"
    if not data.exists():
        write_real_set(data, preset["classes"], preset["size"], preset["per_class"])
    stored = json.loads(args.results.read_text()) if args.results.exists() else {}
    results = stored.setdefault(args.preset, {}).setdefault("cells", {})
    for cell in cells(preset):
        if args.only and cell["name"] not in args.only:
            continue
        if cell["name"] in results and not args.redo:
            continue
        print(f"running {cell['name']} ...", file=sys.stderr, flush=True)
        measured = run_cell(cell["world"], cell["launcher"], cell["args"], workdir, cell.get("threads"))
        results[cell["name"]] = {"cell": cell, "seconds": _seconds(cell, measured), "cpu_s": measured["cpu_s"],
                                 "command_wall_s": measured["command_wall_s"],
                                 "device": measured["summary"].get("device") or measured["summary"].get("protocol", {}).get("device")}
        stored[args.preset]["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                                          "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(stored, indent=2))
    rows = report(preset, results)
    stored[args.preset]["table"] = rows
    args.results.write_text(json.dumps(stored, indent=2))
    print(f"{'cell':28} {'s (per it. / stage)':>20} {'speed-up':>9} {'CPU s':>7}  goal")
    for row in rows:
        speed = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
        print(f"{row['cell']:28} {row['seconds']:>20.3f} {speed:>9} {row['cpu_s']:>7.1f}  {row['goal'] or ''}")


if __name__ == "__main__":
    main()
