"""MTT fidelity against the reference code (issue #12): same data, same reduced budget, both halves.

For each task this runs, at IPC 1 and 10 and with 3 evaluation nets:

* ``ref/ref``: mtt-distillation's own expert loop (``buffer.py``) and distillation loop
  (``distill.py``), driven by ``benchmarks/reference_mtt.py``; the reference's experts are saved as
  a ``medcondense-experts/1`` file;
* ``ours/ours``: ``medcondense distill --method mtt`` (its own experts, ``--experts-only`` first so
  the expert time is measured on its own) and ``medcondense evaluate`` (learned step size, DSA);
* ``ours/ref-experts``: our distillation from the reference's experts (checks our MTT loop alone);
* ``ref/our-experts``: the reference's distillation from our experts (checks our experts alone).

Every cell writes one JSON under ``benchmarks/results/fidelity_mtt/<label>/<task>/`` and is skipped
when it exists (resume); the table (verdict rule of docs/results.md's Fidelity section: ours -
reference within ``2 * sqrt(sd_ours^2 + sd_ref^2)``) is printed and written there as ``table.md``.
Both sides' experts (``<task>/reference_experts_<setting>.h5``; ours in the input's expert cache,
found through ``<task>/ours_experts_<setting>.json``) are shared by every label, so a second label (e.g. another ``--lr-lr``) costs only distillations.

Settings are the reference's where the CPU allows (lr_img 1000, lr_lr from its README table: 1e-7
at IPC 1 and 1e-5 above, lr_teacher 0.01, batch_syn = all, DSA ``color_crop_cutout_flip_scale_rotate``,
real init, ZCA off) and a reduced budget elsewhere (``--num-experts``, ``--train-epochs``,
``--iterations``, ``--syn-steps``, ``--eval-epochs``). Both sides see exactly the same numbers.

    OMP_NUM_THREADS=2 python benchmarks/fidelity_mtt.py --ref-dir /path/to/mtt-distillation
    python benchmarks/fidelity_mtt.py --report-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "fidelity_mtt"
WORK = ROOT / "benchmarks" / "work" / "fidelity_mtt"
STRATEGY = "color,crop,cutout,flip,scale,rotate"
TASKS = {
    # the brain-patch task of the DC/DSA/DM fidelity rows, smaller (expert epochs dominate the CPU)
    "aal10": [sys.executable, str(ROOT / "examples" / "brain_patches.py"), "--task", "aal10", "--format", "h5",
              "--train-per-class", "100", "--test-per-class", "60"],
    "fmnist": [sys.executable, str(ROOT / "examples" / "fashion_mnist.py"), "--limit-train", "110", "--limit-test", "100"],
}


def _run(cmd: list[str], log: Path) -> float:
    """Run a command (output to ``log``); its wall seconds. A failure stops the campaign."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.perf_counter()
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        rc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        sys.exit(f"failed (exit {rc}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - started


def task_data(task: str) -> Path:
    folder = WORK / task
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data.h5"
    if not data.exists():  # brain_patches writes OUT/data.h5; fashion_mnist writes -o
        _run(TASKS[task] + (["--out", str(folder)] if task == "aal10" else ["-o", str(data)]), folder / "build.log")
    return data


def lr_lr(a: argparse.Namespace, ipc: int) -> float:
    """``--lr-lr``, or the reference's per-IPC value (its README table: 1e-7 at IPC 1, 1e-5 above)."""
    return a.lr_lr if a.lr_lr is not None else (1e-7 if ipc == 1 else 1e-5)


def _budget(a: argparse.Namespace, ipc: int = 10) -> list[str]:
    return ["--syn-steps", str(a.syn_steps), "--expert-epochs", str(a.expert_epochs),
            "--max-start-epoch", str(a.max_start_epoch), "--lr-img", str(a.lr_img), "--lr-lr", str(lr_lr(a, ipc)),
            "--lr-teacher", str(a.lr_teacher)]


def ref_cell(a, data: Path, ipc: int, experts_from: str, experts: Path, out: Path, log: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reference_mtt.py"), "--ref-dir", str(a.ref_dir),
           "--data", str(data), "--ipc", str(ipc), "--num-experts", str(a.num_experts),
           "--train-epochs", str(a.train_epochs), "--iterations", str(a.iterations),
           "--eval-epochs", str(a.eval_epochs), "--models", str(a.models), "--seed", str(a.seed),
           "--out", str(out)] + _budget(a, ipc)
    if experts_from == "reference":
        cmd += ["--experts-from", "reference", "--save-experts", str(experts)]
    else:
        cmd += ["--experts-from", "ours", "--experts", str(experts)]
    wall = _run(cmd, log)
    record = json.loads(out.read_text())
    record["wall_seconds"] = round(wall, 1)
    out.write_text(json.dumps(record, indent=2) + "\n")


def _expert_setting(a: argparse.Namespace) -> str:
    """What names one expert build in the cache files: experts x epochs and the teacher's lr."""
    return f"{a.num_experts}x{a.train_epochs}_lr{a.lr_teacher:g}"


def _medcondense(args: list[str], log: Path) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m medcondense ARGS`` from this checkout: the finished process (stdout kept, stderr
    appended to ``log``) and its wall seconds."""
    cmd = [sys.executable, "-m", "medcondense", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(cmd) + "\n" + proc.stderr)
    return proc, wall


def _failed(proc: subprocess.CompletedProcess, log: Path) -> None:
    sys.exit(f"failed (exit {proc.returncode}): {' '.join(map(str, proc.args))}; see {log}")


def our_experts(a, data: Path, folder: Path, log: Path) -> tuple[Path, float]:
    """``distill --method mtt --experts-only``: our experts, timed on their own (path from ``--json``)."""
    marker = folder / f"ours_experts_{_expert_setting(a)}.json"
    if marker.exists():
        record = json.loads(marker.read_text())
        if Path(record["path"]).exists():
            return Path(record["path"]), record["wall_seconds"]
    proc, wall = _medcondense(["distill", str(data), "--method", "mtt", "--experts-only",
                               "--num-experts", str(a.num_experts), "--train-epochs", str(a.train_epochs),
                               "--aug", STRATEGY, "--seed", str(a.seed), "--device", "cpu",
                               "--json", "-o", str(folder / "unused.h5")] + _budget(a), log)
    if proc.returncode != 0:
        _failed(proc, log)
    path = json.loads(proc.stdout)["experts"]["path"]
    marker.write_text(json.dumps({"path": path, "wall_seconds": round(wall, 1)}) + "\n")
    return Path(path), wall


def our_cell(a, data: Path, ipc: int, experts: Path, out: Path, log: Path, expert_wall: float | None) -> None:
    folder = out.parent
    syn = folder / (out.stem + ".h5")
    proc, distill_wall = _medcondense(
        ["distill", str(data), "--method", "mtt", "--ipc", str(ipc), "--experts", str(experts),
         "--iterations", str(a.iterations), "--aug", STRATEGY, "--init", "real", "--seed", str(a.seed),
         "--device", "cpu", "--overwrite", "--json", "-o", str(syn)] + _budget(a, ipc), log)
    if proc.returncode != 0:
        error = next((line for line in proc.stderr.splitlines() if line.startswith("error:")), "")
        if "learned step size" not in error:
            _failed(proc, log)
        # our guard stopped the run (the reference has none): a result of the comparison, not a crash
        out.write_text(json.dumps({"data": str(data), "ipc": ipc, "settings": {k: str(v) for k, v in vars(a).items()},
                                   "stopped": error, "distill_wall_seconds": round(distill_wall, 1),
                                   "expert_wall_seconds": expert_wall}, indent=2) + "\n")
        return
    summary = json.loads(proc.stdout)
    report_path = folder / (out.stem + "_report.json")
    proc, _ = _medcondense(["evaluate", str(syn), "--real", str(data), "--models", str(a.models),
                            "--epochs", str(a.eval_epochs), "--baselines", "none", "--seed", str(a.seed),
                            "--device", "cpu", "--overwrite", "--json", "-o", str(report_path)], log)
    if proc.returncode != 0:
        _failed(proc, log)
    report = json.loads(report_path.read_text())
    result = report["results"][0]
    accs = [float(v) for v in result["metrics"]["accuracy"].get("values", [])] or None
    record = {
        "data": str(data), "ipc": ipc, "settings": {k: str(v) for k, v in vars(a).items()},
        "accuracy_mean": result["metrics"]["accuracy"]["mean"], "accuracy_std": result["metrics"]["accuracy"]["std"],
        "accuracies": accs, "learned_lr": summary.get("learned_lr"), "protocol": result.get("protocol"),
        "seconds_per_mtt_iteration": summary.get("seconds_per_iteration"), "distill_wall_seconds": round(distill_wall, 1),
        "expert_wall_seconds": expert_wall,
        "seconds_per_expert_epoch": None if expert_wall is None else round(expert_wall / (a.num_experts * a.train_epochs), 3),
        "loss_first": summary.get("loss_first"), "loss_last": summary.get("final_loss"),
    }
    out.write_text(json.dumps(record, indent=2) + "\n")


CELLS = (("ref/ref", "reference", "reference"), ("ours/ours", "ours", "ours"),
         ("ours/ref-experts", "ours", "reference"), ("ref/our-experts", "reference", "ours"))


def verdict(ours: dict, ref: dict) -> tuple[float, float, str]:
    diff = 100 * (ours["accuracy_mean"] - ref["accuracy_mean"])
    band = 200 * math.sqrt(ours["accuracy_std"] ** 2 + ref["accuracy_std"] ** 2)
    word = "within noise" if abs(diff) <= band else ("above" if diff > 0 else "BELOW")
    return diff, band, word


def table(results: Path, tasks: list[str], ipcs: list[int]) -> str:
    lines = ["| task | IPC | distillation / experts | accuracy % | learned lr | s / MTT iteration | s / expert epoch | vs ref/ref (pp) | 2σ (pp) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        for ipc in ipcs:
            base = results / task / f"ipc{ipc}_ref_ref.json"
            ref = json.loads(base.read_text()) if base.exists() else None
            for name, _, _ in CELLS:
                path = results / task / f"ipc{ipc}_{name.replace('/', '_').replace('-', '_')}.json"
                if not path.exists():
                    continue
                r = json.loads(path.read_text())
                if "stopped" in r:
                    lines.append(f"| {task} | {ipc} | {name} | stopped: {r['stopped'].split(';')[0]} | | | | | | |")
                    continue
                vs = ("—", "—", "—") if name == "ref/ref" or ref is None else tuple(
                    f"{x:+.2f}" if isinstance(x, float) and i == 0 else (f"{x:.2f}" if isinstance(x, float) else x)
                    for i, x in enumerate(verdict(r, ref)))
                epoch = r.get("seconds_per_expert_epoch")
                lines.append(f"| {task} | {ipc} | {name} | {100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f} | "
                             f"{r['learned_lr']:.5f} | {r['seconds_per_mtt_iteration']:.2f} | "
                             f"{'—' if epoch is None else f'{epoch:.2f}'} | {vs[0]} | {vs[1]} | {vs[2]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-dir", type=Path, default=os.environ.get("MEDCONDENSE_MTT_REF_DIR"),
                   help="your checkout of mtt-distillation at 50dccea with the torch-2 fixes")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    p.add_argument("--cells", nargs="+", default=[c[0] for c in CELLS], choices=[c[0] for c in CELLS])
    p.add_argument("--num-experts", type=int, default=3)
    p.add_argument("--train-epochs", type=int, default=6)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--syn-steps", type=int, default=5)
    p.add_argument("--expert-epochs", type=int, default=2)
    p.add_argument("--max-start-epoch", type=int, default=4)
    p.add_argument("--lr-img", type=float, default=1000.0)
    p.add_argument("--lr-lr", type=float, default=None,
                   help="default: the reference's table, 1e-7 at IPC 1 and 1e-5 above (1e-5 at IPC 1 drives the step size negative here)")
    p.add_argument("--lr-teacher", type=float, default=0.01)
    p.add_argument("--eval-epochs", type=int, default=100)
    p.add_argument("--models", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="default", help="results subfolder (one per setting you compare)")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    if not a.report_only and not a.ref_dir:
        p.error("--ref-dir (or MEDCONDENSE_MTT_REF_DIR) is required unless --report-only")
    results = RESULTS / a.label
    for task in a.tasks if not a.report_only else []:
        folder = results / task
        folder.mkdir(parents=True, exist_ok=True)
        data = task_data(task)
        log = folder / "campaign.log"
        # the reference's experts are shared by every label (they do not depend on lr_lr), one file per
        # expert setting (ours are keyed by their own cache)
        ref_experts = RESULTS / task / f"reference_experts_{_expert_setting(a)}.h5"
        ref_experts.parent.mkdir(parents=True, exist_ok=True)
        ours_experts, expert_wall = None, None
        for ipc in a.ipcs:
            for name, distiller, experts_from in CELLS:
                if name not in a.cells:
                    continue
                out = folder / f"ipc{ipc}_{name.replace('/', '_').replace('-', '_')}.json"
                if out.exists():
                    continue
                print(f"{task} IPC {ipc} {name} ...", file=sys.stderr, flush=True)
                if experts_from == "ours" and ours_experts is None:
                    ours_experts, expert_wall = our_experts(a, data, RESULTS / task, log)
                if distiller == "reference":
                    if experts_from == "reference":
                        have = ref_experts.exists()
                        ref_cell(a, data, ipc, "ours" if have else "reference", ref_experts, out, log)
                        if have:  # the saved reference experts: record it honestly
                            record = json.loads(out.read_text())
                            record["experts_from"] = "reference (saved by an earlier cell)"
                            out.write_text(json.dumps(record, indent=2) + "\n")
                    else:
                        ref_cell(a, data, ipc, "ours", ours_experts, out, log)
                else:
                    if experts_from == "reference" and not ref_experts.exists():
                        sys.exit("ours/ref-experts needs the ref/ref cell first")
                    experts = ours_experts if experts_from == "ours" else ref_experts
                    our_cell(a, data, ipc, experts, out, log, expert_wall if experts_from == "ours" else None)
    text = table(results, a.tasks, a.ipcs)
    results.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    (results / "table.md").write_text(text + f"\n\n({machine})\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
