"""MTT memory and speed: peak RSS against syn_steps (walk vs full unroll), seconds per MTT
iteration and per expert epoch.

The problem is the one issue #12 names: 10 classes, IPC 10 (100 synthetic images), 32 px,
1 channel, the reference ConvNet (width 128, depth 3, instance norm), DSA on every student step,
all synthetic images in each step (batch_syn = 100). Data is random and standardized: memory
and speed do not depend on content. Every cell runs in its own subprocess, so its peak RSS
(``ru_maxrss``) is its own; the baseline row ``idle`` is a process that only imports torch and
builds the problem. Cells are cached in ``benchmarks/results/mtt.json`` (rerun with
``--fresh`` to measure again).

Cells:

* ``walk`` / ``full`` at each ``--syn-steps``: one warm-up MTT iteration, then ``--iterations``
  timed ones (gradient for the images and the step size);
* ``expert``: seconds per expert epoch on ``--expert-images`` real-sized images (batch 256,
  per-image DSA), float32 and, with ``--amp bf16``, bfloat16 autocast.

    python benchmarks/mtt.py --syn-steps 10 20 40 --full-steps 10 20 --iterations 1
    python benchmarks/mtt.py --device cuda --syn-steps 10 20 40 80 --full-steps 10 20 40
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "mtt.json"
NUM_CLASSES, IPC, SIZE = 10, 10, 32
OPS = ["color", "crop", "cutout", "flip", "scale", "rotate"]


def _problem(device_name: str):
    import torch

    from medcondense.distill.mtt import ParamLayout, functional_forward
    from medcondense.nets import ConvNet

    device = torch.device(device_name)
    torch.manual_seed(0)
    net = ConvNet(1, NUM_CLASSES, SIZE).to(device)
    layout = ParamLayout.of(net)
    start = layout.flatten(net)
    target = start + 0.01 * torch.randn(start.shape, device=device)
    syn = torch.randn(NUM_CLASSES * IPC, 1, SIZE, SIZE, device=device)
    labels = torch.arange(NUM_CLASSES, device=device).repeat_interleave(IPC)
    return functional_forward(net), syn, labels, start, target, layout.size


def measure_mtt(mode: str, syn_steps: int, iterations: int, device_name: str) -> dict:
    """Seconds per MTT iteration and peak RSS of the walk or the full unroll."""
    import torch

    from medcondense.distill.mtt import sample_steps, unroll_loss, walk_gradients

    forward, syn, labels, start, target, num_params = _problem(device_name)
    lr = torch.tensor(0.01, device=syn.device)
    generator = torch.Generator().manual_seed(1)
    times = []
    for i in range(max(1, iterations + (iterations > 0))):
        steps = sample_steps(syn.shape[0], syn_steps, syn.shape[0], OPS, generator, syn.device)
        t0 = time.perf_counter()
        if mode == "walk":
            result = walk_gradients(forward, syn, labels, lr, start, target, steps)
            value = result.loss
        else:
            s = syn.clone().requires_grad_(True)
            l = lr.clone().requires_grad_(True)
            loss = unroll_loss(forward, s, labels, l, start, target, steps)
            loss.backward()
            value = float(loss.detach())
            del loss, s, l
        _sync(syn.device)
        if i > 0 or iterations == 0:  # the first iteration warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return {"cell": mode, "syn_steps": syn_steps, "seconds_per_iteration": sum(times) / len(times),
            "loss": value, "parameters": num_params, **_peak(syn.device)}


def measure_expert(epochs: int, images: int, amp: str, device_name: str) -> dict:
    """Seconds per expert epoch (the reference buffer.py's training: SGD, batch 256, DSA)."""
    import torch

    from medcondense.distill.experts import ExpertSettings, train_expert

    device = torch.device(device_name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(images, 1, SIZE, SIZE, generator=g).to(device)
    y = (torch.arange(images) % NUM_CLASSES).to(device)
    warm = ExpertSettings(num_experts=1, train_epochs=1, aug=tuple(OPS), amp=amp)
    train_expert(x[:256], y[:256], NUM_CLASSES, warm, 0)
    settings = ExpertSettings(num_experts=1, train_epochs=epochs, aug=tuple(OPS), amp=amp)
    t0 = time.perf_counter()
    train_expert(x, y, NUM_CLASSES, settings, 0)
    _sync(device)
    return {"cell": f"expert-{amp}", "images": images, "seconds_per_epoch": (time.perf_counter() - t0) / epochs, **_peak(device)}


def measure_idle(device_name: str) -> dict:
    """The process with torch imported and the problem built: the floor under every cell."""
    _problem(device_name)
    return {"cell": "idle", **_peak(__import__("torch").device(device_name))}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device) -> dict:
    import torch

    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cell == "idle":
        row = measure_idle(args.device)
    elif args.cell.startswith("expert"):
        row = measure_expert(args.expert_epochs, args.expert_images, args.amp, args.device)
    else:
        row = measure_mtt(args.cell, args.syn_steps[0], args.iterations, args.device)
    print(json.dumps(row))


def _cells(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    cells: list[tuple[str, int | None]] = [("idle", None)]
    cells += [("walk", n) for n in args.syn_steps]
    cells += [("full", n) for n in args.full_steps]
    if args.expert_images:
        cells += [("expert", None)]
    return cells


def _cell_key(cell: str, steps: int | None, args: argparse.Namespace) -> str:
    extra = f"{args.amp}-{args.expert_images}" if cell == "expert" else ""
    return f"{cell}:{steps}:{args.device}:{args.iterations}:{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--syn-steps", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--full-steps", type=int, nargs="*", default=[10, 20])
    parser.add_argument("--iterations", type=int, default=1, help="timed iterations after a warm-up one (0: time the first, no warm-up)")
    parser.add_argument("--expert-images", type=int, default=2560, help="0: no expert cell")
    parser.add_argument("--expert-epochs", type=int, default=1)
    parser.add_argument("--amp", default="off", choices=["off", "bf16"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="measure again instead of reusing cached cells")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        _child(args)
        return
    cached = json.loads(RESULTS.read_text()) if RESULTS.exists() and not args.fresh else {"cells": {}}
    cells = cached.get("cells", {})
    for cell, steps in _cells(args):
        key = _cell_key(cell, steps, args)
        if key in cells:
            continue
        cmd = [sys.executable, __file__, "--cell", cell, "--device", args.device, "--iterations", str(args.iterations),
               "--expert-images", str(args.expert_images), "--expert-epochs", str(args.expert_epochs),
               "--amp", args.amp, "--threads", str(args.threads), "--syn-steps", str(steps or 0)]
        t0 = time.time()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"cell {key} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(time.time() - t0, 1)
        cells[key] = row
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"machine": _machine(), "cells": cells}, indent=2) + "\n")
        print(f"{key}: {row}", file=sys.stderr)
    _print_table(list(cells.values()))


def _machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
            "cpus": __import__("os").cpu_count()}


def _print_table(rows: list[dict]) -> None:
    print(f"{'cell':<14} {'syn_steps':>9} {'s/iter':>9} {'s/epoch':>9} {'peak RSS MiB':>13}")
    for row in sorted(rows, key=lambda r: (r["cell"], r.get("syn_steps") or 0)):
        s_iter = f"{row['seconds_per_iteration']:.2f}" if "seconds_per_iteration" in row else ""
        s_epoch = f"{row['seconds_per_epoch']:.2f}" if "seconds_per_epoch" in row else ""
        print(f"{row['cell']:<14} {row.get('syn_steps') or '':>9} {s_iter:>9} {s_epoch:>9} {row['peak_rss_mib']:>13.1f}")


if __name__ == "__main__":
    main()
