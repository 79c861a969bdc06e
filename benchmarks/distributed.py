"""torchrun speed-up: distill (DM, DC, DSA, IDM, DP-DM, MTT's experts) and evaluate on W processes
against one process.

Every cell is a real command line, ``python -m medcondense ...`` for one process and
``torchrun --standalone --nproc_per_node W -m medcondense ...`` for W, on a random real set
written once (speed does not depend on content). distill cells report rank 0's seconds per outer
iteration over the whole loop (process start-up, reading and writing excluded; a compiled run's
first iteration included on both sides); evaluate, DP-DM and the MTT expert build report the
stage's wall time (DP-DM's release on rank 0 and its broadcast happen before the loop and are
part of what is measured). Each cell's result is cached in the results JSON and skipped on a
rerun (``--redo`` to measure again), so an interrupted benchmark resumes.

Goals (issue #14), printed beside the measurements:

* DM: speed-up >= 0.7 x K / ceil(K / W) for K classes on W ranks (10 classes on 4 GPUs: >= 2.3x);
* evaluate with 5 nets on 5 GPUs: >= 4x;
* DC/DSA: against the bound 1 / ((1 - f) / (K / ceil(K / W)) + f), f the inner loop's share of
  an iteration (measured here by a one-process run with ``--inner-loop 0``);
* IDM: the bound 1 / ((1 - f) / (K / ceil(K / W)) + f), f the share of the network queue's
  training, which every rank repeats (it does not depend on the number of classes: f comes from
  one-process runs on K and on ceil(K / 2) classes, T(K) = S + K c);
* DP-DM: the same bound, f the share of the stage outside the loop (the release on rank 0, its
  broadcast, reading the input), from the one-process run (wall time - iterations x s/iteration);
* MTT ``--experts-only``: the experts go round-robin, so at most E / ceil(E / W) for E experts;
* one rank under torchrun within 5 % of a plain run.

On a CPU each torchrun rank runs one thread, so the ``cpu`` preset also measures one process
with ``OMP_NUM_THREADS=1`` (``W=1 1-thread``; the "vs 1 thr." column) and takes the IDM and DP-DM
shares from those like-for-like runs.

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
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "distributed.json"
SRC = HERE.parent / "src"

PRESETS = {
    # the GPU measurement: DM paper preset IPC 50 (batch_real 256), 10 classes, 32 px
    # IDM at IPC 10 with its paper queue (100 nets); DP-DM at IPC 50, epsilon 8; 10 experts x 50 epochs
    "gpu": dict(device="cuda", classes=10, size=32, per_class=300, ipc=50, iterations=30, batch_real=256,
                dc_ipc=10, dc_iterations=2, worlds=[1, 2, 4], eval_models=5, eval_epochs=300, eval_worlds=[1, 5],
                idm_ipc=10, idm_iterations=30, dp_ipc=50, dp_iterations=30, dp_epsilon=8, experts=10,
                expert_epochs=50, methods=["dm", "dc", "dsa", "idm", "dp-dm", "mtt-experts"], one_rank=True, extra=[]),
    # what a shared 2-core CPU affords in a few minutes
    "cpu": dict(device="cpu", classes=4, size=16, per_class=64, ipc=10, iterations=15, batch_real=64,
                dc_ipc=1, dc_iterations=3, worlds=[1, 2], eval_models=4, eval_epochs=30, eval_worlds=[1, 2],
                idm_ipc=2, idm_iterations=6, dp_ipc=10, dp_iterations=15, dp_epsilon=8, experts=4, expert_epochs=2,
                expert_extra=["--expert-epochs", "1", "--max-start-epoch", "1"],  # what 2 epochs allow
                methods=["dm", "dsa", "idm", "dp-dm", "mtt-experts"], one_rank=True, extra=["--compile", "off"],
                one_thread=["idm", "dp-dm", "mtt-experts"]),
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


def run_cell(world: int, launcher: str, args: list[str], workdir: Path, threads: int | None = None,
             fresh: list[str] | None = None) -> dict:
    """Run one command line; its JSON summary, wall time and the CPU time of its processes.

    ``fresh``: paths under ``workdir`` removed first (a cache the cell must not find, such as the
    expert trajectories beside the input).
    """
    for name in fresh or []:
        shutil.rmtree(workdir / name, ignore_errors=True)
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


def _half_classes(preset: dict) -> int:
    return math.ceil(preset["classes"] / 2)


def _one_thread(preset: dict, method: str) -> bool:
    """Whether the preset measures ``method`` in one process with one thread too (the CPU preset:
    each torchrun rank gets one thread, so that is the like-for-like one-process run)."""
    return method in preset.get("one_thread", [])


def _distill_base(method: str, preset: dict, data: str = "data.h5") -> list[str]:
    """The stage arguments of a distill cell of ``method`` (``mtt-experts``: the expert build)."""
    device = ["--device", preset["device"]]
    if method == "mtt-experts":
        return ["distill", data, "--method", "mtt", "--ipc", "1", "--experts-only", "--num-experts",
                str(preset["experts"]), "--train-epochs", str(preset["expert_epochs"]), *preset.get("expert_extra", []),
                *device, *preset["extra"]]
    if method == "dp-dm":
        return ["distill", data, "--method", "dm", "--dp-epsilon", str(preset["dp_epsilon"]), "--ipc",
                str(preset["dp_ipc"]), "--iterations", str(preset["dp_iterations"]), "--checkpoint-every", "0",
                *device, *preset["extra"]]
    ipc, iterations = {"dc": (preset["dc_ipc"], preset["dc_iterations"]),
                       "dsa": (preset["dc_ipc"], preset["dc_iterations"]),
                       "idm": (preset["idm_ipc"], preset["idm_iterations"])}.get(method, (preset["ipc"], preset["iterations"]))
    return ["distill", data, "--method", method, "--ipc", str(ipc), "--iterations", str(iterations),
            "--batch-real", str(preset["batch_real"]), "--checkpoint-every", "0", *device, *preset["extra"]]


#: how a method's cells are timed: seconds per iteration, or the stage's wall time
STAGE_TIMED = ("dp-dm", "mtt-experts", "evaluate")


def cells(preset: dict) -> list[dict]:
    """Every measurement of a preset: (name, world, launcher, stage arguments)."""
    out = []
    for method in preset["methods"]:
        base = _distill_base(method, preset)
        kind = "stage" if method in STAGE_TIMED else "distill"
        fresh = ["data.h5.experts"] if method == "mtt-experts" else []
        worlds = preset["worlds"]
        for world in worlds:
            launcher = "plain" if world == 1 else "torchrun"
            out.append({"name": f"{method} W={world}", "kind": kind, "method": method, "world": world,
                        "launcher": launcher, "fresh": fresh, "args": [*base, "-o", f"{method}_w{world}.h5"]})
        if method == "dm" or method in preset.get("one_thread", []):
            # one process with one thread: what each torchrun rank gets on a CPU
            out.append({"name": f"{method} W=1 1-thread", "kind": kind, "method": method, "world": 1,
                        "launcher": "plain", "threads": 1, "fresh": fresh, "args": [*base, "-o", f"{method}_w1t1.h5"]})
        if preset["one_rank"] and method == "dm":
            out.append({"name": f"{method} torchrun W=1", "kind": "distill", "method": method, "world": 1,
                        "launcher": "torchrun", "args": [*base, "-o", f"{method}_t1.h5"]})
        if method in ("dc", "dsa"):
            out.append({"name": f"{method} W=1 inner-loop 0", "kind": "probe", "method": method, "world": 1,
                        "launcher": "plain", "args": [*base, "--inner-loop", "0", "-o", f"{method}_inner0.h5"]})
        if method == "idm":  # the queue's share: the same run on half the classes
            half = _distill_base(method, preset, data="data_half.h5")
            out.append({"name": f"{method} W=1 {_half_classes(preset)} classes", "kind": "probe", "method": method,
                        "world": 1, "launcher": "plain", "threads": 1 if _one_thread(preset, method) else None,
                        "args": [*half, "-o", f"{method}_half.h5"]})
    for world in preset["eval_worlds"]:
        out.append({"name": f"evaluate W={world}", "kind": "stage", "method": "evaluate", "world": world,
                    "launcher": "plain" if world == 1 else "torchrun",
                    "args": ["evaluate", "data.h5", "--real", "data.h5", "--models", str(preset["eval_models"]),
                             "--epochs", str(preset["eval_epochs"]), "--baselines", "none", "--device",
                             preset["device"], "-o", f"eval_w{world}.json"]})
    return out


def _seconds(cell: dict, result: dict) -> float:
    summary = result["summary"]
    if cell["method"] == "evaluate":
        return float(summary["provenance"]["wall_time_s"])
    if cell["kind"] == "stage":
        return float(summary["wall_time_s"])
    return float(summary["seconds_per_iteration"])


def amdahl(share: float, bound: float) -> float:
    """The speed-up when a ``share`` of the one-process time is repeated on every rank and the
    rest splits ``bound`` ways."""
    return 1 / ((1 - share) / bound + share)


def _goal(name: str, cell: dict, preset: dict, results: dict, single: dict | None) -> str | None:
    """The issue's goal, or the bound the split allows, for one cell."""
    method, world, classes = cell["method"], cell["world"], preset["classes"]
    bound = classes / math.ceil(classes / world)
    if "torchrun W=1" in name:
        return ">= 0.95x (one rank within 5 % of a plain run)"
    if world == 1 or not single:
        return None
    if method == "evaluate":
        models = preset["eval_models"]
        return f">= {0.8 * models / math.ceil(models / world):.2f}x (0.8 x nets / ceil(nets / W))"
    if method == "dm":
        return f">= {0.7 * bound:.2f}x (0.7 x {bound:.2f})"
    if method == "mtt-experts":
        experts = preset["experts"]
        return f"bound {experts / math.ceil(experts / world):.2f}x (E / ceil(E / W), {experts} experts)"
    share = None
    if method in ("dc", "dsa") and f"{method} W=1 inner-loop 0" in results:
        share, what = 1 - results[f"{method} W=1 inner-loop 0"]["seconds"] / single["seconds"], "inner-loop"
    elif method == "idm" and f"idm W=1 {_half_classes(preset)} classes" in results:
        half = _half_classes(preset)
        whole = results.get("idm W=1 1-thread") if _one_thread(preset, method) else single  # same threads as the probe
        if whole:
            per_class = (whole["seconds"] - results[f"idm W=1 {half} classes"]["seconds"]) / (classes - half)
            share, what = (whole["seconds"] - classes * per_class) / whole["seconds"], "queue"
            if per_class <= 0:
                return "bound not measurable: the run on fewer classes was not faster (noise of a loaded machine)"
    elif method == "dp-dm":
        whole = results.get("dp-dm W=1 1-thread") if _one_thread(preset, method) else single
        whole = whole or single
        loop = whole["seconds_per_iteration"] * preset["dp_iterations"]
        share, what = (whole["seconds"] - loop) / whole["seconds"], "release + rest"
    if share is None:
        return None
    share = min(1.0, max(0.0, share))
    return f"bound {amdahl(share, bound):.2f}x ({what} share {share:.2f})"


def report(preset: dict, results: dict) -> list[dict]:
    """Speed-ups against the one-process cell of the same method, with each goal."""
    rows = []
    for name, entry in results.items():
        cell, seconds = entry["cell"], entry["seconds"]
        if cell["kind"] in ("probe", "inner0"):  # measured for a bound, not a speed-up of its own
            continue
        single = None if name.endswith("1-thread") else results.get(f"{cell['method']} W=1")
        speedup = single["seconds"] / seconds if single else None
        threaded = results.get(f"{cell['method']} W=1 1-thread")
        versus_one_thread = threaded["seconds"] / seconds if threaded and cell["world"] > 1 else None
        rows.append({"cell": name, "seconds": seconds, "timed": "stage" if cell["kind"] == "stage" else "per it.",
                     "speedup": speedup, "speedup_vs_one_thread": versus_one_thread,
                     "goal": _goal(name, cell, preset, results, single),
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
    half = workdir / "data_half.h5"  # IDM's queue share (see the module docstring)
    if "idm" in preset["methods"] and not half.exists():
        write_real_set(half, _half_classes(preset), preset["size"], preset["per_class"])
    stored = json.loads(args.results.read_text()) if args.results.exists() else {}
    results = stored.setdefault(args.preset, {}).setdefault("cells", {})
    for cell in cells(preset):
        if args.only and cell["name"] not in args.only:
            continue
        if cell["name"] in results and not args.redo:
            continue
        print(f"running {cell['name']} ...", file=sys.stderr, flush=True)
        measured = run_cell(cell["world"], cell["launcher"], cell["args"], workdir, cell.get("threads"),
                            cell.get("fresh"))
        results[cell["name"]] = {"cell": cell, "seconds": _seconds(cell, measured), "cpu_s": measured["cpu_s"],
                                 "seconds_per_iteration": measured["summary"].get("seconds_per_iteration"),
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
    print(f"{'cell':28} {'seconds':>10} {'timed':>8} {'speed-up':>9} {'vs 1 thr.':>9} {'CPU s':>7}  goal")
    for row in rows:
        speed = f"{row['speedup']:.2f}x" if row["speedup"] else "-"
        threaded = f"{row['speedup_vs_one_thread']:.2f}x" if row.get("speedup_vs_one_thread") else "-"
        print(f"{row['cell']:28} {row['seconds']:>10.3f} {row.get('timed', ''):>8} {speed:>9} {threaded:>9} "
              f"{row['cpu_s']:>7.1f}  {row['goal'] or ''}")


if __name__ == "__main__":
    main()
