"""Seconds per outer iteration and peak memory of DC, DSA and DM (and their speed variants).

The problem is the one the issue names: 10 classes, 32 px, 1 channel, 256 real images per class
(random standardized data: speed does not depend on content), IPC 1/10/50, the reference's
settings (batch_real 256, ConvNet width 128 depth 3 instance norm, DC/DSA outer/inner loops by
IPC). Every configuration runs in its own subprocess so peak memory is its own.

DC/DSA iterations at IPC 10/50 take minutes on a CPU; ``--max-outer K`` runs only K of the
``outer_loop`` image updates of an iteration, times the matching updates and the inner loops
between them apart, and scales each to the full ``outer_loop`` updates and ``outer_loop - 1``
inner loops (every update does the same work; the table marks such rows). On a GPU run with ``--max-outer 0`` (all).

Variants (``--variants``): ``base`` (classes one by one, float32, eager: the reference's order),
``batched`` (DM: all classes in one pass), ``bf16`` (bfloat16 autocast of the first-order
passes), ``compile`` (torch.compile of the first-order passes), ``bf16+compile`` (what a CPU
with native bf16 runs by default), ``batched+bf16``, ``batched+compile``, ``channels_last``
(memory format of images and net). The first (warm-up) iteration, which compiles, is not timed.
Results go to ``benchmarks/results/distill.json`` and a table on stdout. For the ratio to the
reference implementation see ``benchmarks/versus_reference.py``.

    python benchmarks/distill.py --device cpu --iterations 2 --ipc 1 10 50 --max-outer 2
    python benchmarks/distill.py --device cuda --iterations 20 --max-outer 0
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "distill.json"
VARIANTS = ("base", "batched", "bf16", "compile", "bf16+compile", "batched+bf16", "batched+compile", "channels_last")


def measure(method: str, ipc: int, variant: str, device_name: str, iterations: int, max_outer: int,
            batch_real: int, threads: int | None) -> dict:
    """Time ``iterations`` outer iterations of one configuration (after one warm-up iteration)."""
    import torch

    from medcondense.distill.base import DataSpec, Engine, Hyperparameters, RealSampler, initial_state
    from medcondense.distill.registry import method_class
    from medcondense.augment import default_ops
    from medcondense.distill.dc import loops_for_ipc

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    num_classes, size, per_class = 10, 32, max(256, batch_real)
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(num_classes * per_class, 1, size, size, generator=gen).to(device)
    channels_last = variant == "channels_last"
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    cls = method_class(method)
    outer, inner = loops_for_ipc(ipc) if cls.uses_loops else (1, 0)
    run_outer = outer if not max_outer else min(outer, max_outer)
    hp = Hyperparameters(
        method=method, ipc=ipc, iterations=iterations, lr_img=cls.default_lr_img, lr_net=0.01,
        batch_real=batch_real, outer_loop=run_outer, inner_loop=inner,
        aug=default_ops(True) if cls.uses_augmentation else [], batch_classes="batched" in variant,
        amp="bf16" if "bf16" in variant else "off", compile="compile" in variant,
    )
    spec = DataSpec(1, size, num_classes)
    m = cls(hp, spec, device)
    if channels_last:
        base_build = m.build_net
        m.build_net = lambda: base_build().to(memory_format=torch.channels_last)  # type: ignore[method-assign]
    sampler = RealSampler(list(real.split(per_class)))
    labels = torch.arange(num_classes, device=device).repeat_interleave(ipc)
    inner_seconds = _time_inner_loop(m)
    engine = Engine(m, sampler, labels, checkpoint=None, checkpoint_every=0, run_key="bench", source_hash="bench")
    syn = torch.cat([sampler.sample(c, ipc, gen) for c in range(num_classes)])
    state = initial_state(syn, gen)
    # warm-up iteration (allocator, kernels), then the timed ones
    hp.iterations = 0
    state = engine.run(state)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    hp.iterations = iterations
    inner_seconds.clear()
    t0 = time.perf_counter()
    state = engine.run(state)
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = (time.perf_counter() - t0) / iterations
    inner = sum(inner_seconds) / iterations
    # An iteration is outer_loop matching updates and outer_loop - 1 inner loops; scale each part.
    match_per_update = (total - inner) / run_outer
    inner_per_loop = inner / (run_outer - 1) if run_outer > 1 else 0.0
    seconds = outer * match_per_update + (outer - 1) * inner_per_loop
    losses = [v for _, v in state.loss_curve]
    return {
        "method": method, "ipc": ipc, "variant": variant, "device": str(device),
        "seconds_per_iteration": seconds, "extrapolated": run_outer != outer,
        "seconds_matching_update": match_per_update, "seconds_inner_loop": inner_per_loop,
        "outer_loop": outer, "outer_measured": run_outer, "inner_loop": inner, "batch_real": batch_real,
        "peak_memory_mb": _peak_memory_mb(device), "loss_curve": losses,
    }


def _time_inner_loop(method) -> list[float]:
    """Wrap ``method.between_updates`` to record its wall time per call (CUDA: synchronized)."""
    import torch

    seconds: list[float] = []
    original = method.between_updates

    def timed(*args, **kwargs):
        if method.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        original(*args, **kwargs)
        if method.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)

    method.between_updates = timed
    return seconds


def _peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _child(args: argparse.Namespace) -> None:
    result = measure(args.method[0], args.ipc[0], args.variants[0], args.device, args.iterations,
                     args.max_outer, args.batch_real, args.threads)
    sys.stdout.write(json.dumps(result) + "\n")


def _configurations(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    configs = []
    for method in args.method:
        for ipc in args.ipc:
            for variant in args.variants:
                if method != "dm" and variant.startswith("batched"):
                    continue  # DC/DSA compare per-class gradients: nothing to batch
                configs.append((method, ipc, variant))
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=2, help="timed outer iterations per configuration")
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--method", nargs="+", default=["dc", "dsa", "dm"])
    parser.add_argument("--variants", nargs="+", default=["base", "bf16+compile", "batched", "batched+compile"], choices=VARIANTS)
    parser.add_argument("--max-outer", type=int, default=2, help="DC/DSA: image updates timed per iteration, at least 2 so an inner loop is timed (0 = all)")
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_outer == 1:
        parser.error("--max-outer must be 0 (all) or at least 2: the inner loop runs between updates")
    if args.child:
        _child(args)
        return
    rows = []
    for method, ipc, variant in _configurations(args):
        cmd = [sys.executable, __file__, "--child", "--device", args.device, "--iterations", str(args.iterations),
               "--ipc", str(ipc), "--method", method, "--variants", variant, "--max-outer", str(args.max_outer),
               "--batch-real", str(args.batch_real)] + (["--threads", str(args.threads)] if args.threads else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"method": method, "ipc": ipc, "variant": variant, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"done: {method} ipc {ipc} {variant}: {rows[-1]['seconds_per_iteration']:.3f} s/iteration",
              file=sys.stderr, flush=True)
    record = {"machine": platform.processor() or platform.machine(), "device": args.device,
              "iterations": args.iterations, "max_outer": args.max_outer, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(args.output)
    _print_table(rows)


def _print_table(rows: list[dict]) -> None:
    print(f"{'method':6} {'ipc':>4} {'variant':14} {'s/iter':>10} {'peak MB':>9}  note")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:6} {r['ipc']:>4} {r['variant']:14} {'error':>10} {'':>9}  {r['error']}")
            continue
        note = f"extrapolated from {r['outer_measured']}/{r['outer_loop']} updates" if r["extrapolated"] else ""
        print(f"{r['method']:6} {r['ipc']:>4} {r['variant']:14} {r['seconds_per_iteration']:10.3f} {r['peak_memory_mb']:9.0f}  {note}")


if __name__ == "__main__":
    main()
