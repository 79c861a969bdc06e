"""Seconds per outer iteration: medcondense against the reference code, same machine, same settings.

The issue's speed goal is "at least 2x faster per iteration than the reference implementation
(VICO-UoE/DatasetCondensation) with the same settings on the same machine". This benchmark
measures exactly that ratio: for each method and IPC it builds one problem (10 classes, 32 px,
1 channel, random standardized images: speed does not depend on content), runs the reference's
own iteration (``benchmarks/reference.py``'s driver around the reference's ``get_network``,
``match_loss`` and ``DiffAugment``) and ours (the ``medcondense distill`` engine) with the same
batch_real, IPC, loops and network, and interleaves them in rounds so that load from other
jobs hits both alike. The ratio is reference seconds / our seconds, from the median round.

Our variants (``--variants``):

``default``
    what ``medcondense distill`` chooses on this device with its ``auto`` options (on a CPU with
    native bf16: bfloat16 autocast for first-order passes, torch.compile, DM's batched classes).
``eager-fp32``
    float32, no compile, classes one by one: the reference's order of work, our code.
``bf16``, ``compile``, ``bf16+compile``
    the switches one at a time (the other off) and together, to show what each gains.

DC/DSA at IPC 10/50 take minutes per iteration on a CPU: ``--max-outer K`` runs both sides with
``K`` outer steps (and the table's inner loop) instead of the table's count, the same for both,
so the ratio compares like with like (the table says so). The first (warm-up) iteration of each
side is timed apart: it includes compiling.

Needs the reference checkout (see ``benchmarks/reference.py``: ``--ref-dir`` or
``MEDCONDENSE_REF_DIR``). Writes ``benchmarks/results/versus_reference.json`` and prints a table.

    python benchmarks/versus_reference.py --ref-dir ../DatasetCondensation --method dm --ipc 1 10 50
    python benchmarks/versus_reference.py --method dc dsa --ipc 1 10 --max-outer 2 --iterations 1
    python benchmarks/versus_reference.py --device cuda --ipc 1 10 50 --max-outer 0   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "versus_reference.json"
VARIANTS = {
    "default": {},
    "eager-fp32": {"amp": "off", "compile": "off", "batch_classes": "off"},
    "bf16": {"amp": "bf16", "compile": "off"},
    "compile": {"amp": "off", "compile": "on"},
    "bf16+compile": {"amp": "bf16", "compile": "on"},
}
NUM_CLASSES, SIZE = 10, 32


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference_runner(ref_dir: Path, method: str, ipc: int, batch_real: int, loops, real, device):
    """A function running one reference outer iteration, and the reference's args namespace."""
    import numpy as np
    import torch
    from torch import nn

    sys.path.insert(0, str(HERE))
    import reference as harness  # benchmarks/reference.py: the driver around the reference's code

    ref = harness._import_reference(ref_dir)
    init, lr_img, strategy = harness.METHOD_DEFAULTS[method]
    args = argparse.Namespace(
        method=method.upper(), dataset="medcondense", model="ConvNet", ipc=ipc, lr_img=lr_img, lr_net=0.01,
        batch_real=batch_real, batch_train=256, init=init, dsa_strategy=strategy, dis_metric="ours",
        device=str(device), outer_loop=loops[0], inner_loop=loops[1], dsa_param=ref.ParamDiffAug(),
        dsa=(method in ("dsa", "dm")),
    )
    per_class = real.shape[0] // NUM_CLASSES
    indices_class = [list(range(c * per_class, (c + 1) * per_class)) for c in range(NUM_CLASSES)]

    def get_images(c, n):
        return real[np.random.permutation(indices_class[c])[:n]]

    image_syn = torch.cat([get_images(c, ipc) for c in range(NUM_CLASSES)]).detach().clone().requires_grad_(True)
    label_syn = torch.arange(NUM_CLASSES, device=device).repeat_interleave(ipc)
    optimizer_img = torch.optim.SGD([image_syn], lr=args.lr_img, momentum=0.5)
    criterion = nn.CrossEntropyLoss().to(device)

    def iteration() -> float:
        net = ref.get_network("ConvNet", 1, NUM_CLASSES, (SIZE, SIZE)).to(device)
        net.train()
        if method == "dm":
            return harness._dm_iteration(ref, args, net, image_syn, optimizer_img, get_images, NUM_CLASSES, 1,
                                         (SIZE, SIZE), torch)
        return harness._dc_iteration(ref, args, net, image_syn, label_syn, optimizer_img, criterion, get_images,
                                     NUM_CLASSES, 1, (SIZE, SIZE), torch)

    return iteration


def _our_runner(method: str, ipc: int, batch_real: int, loops, real, device, overrides: dict):
    """A function running one of our outer iterations (the ``medcondense distill`` engine), and its hp."""
    import torch

    from medcondense.config import DistillConfig
    from medcondense.distill.base import DataSpec, Engine, RealSampler, initial_state
    from medcondense.distill.registry import method_class
    from medcondense.distill.pipeline import resolve_hyperparameters

    config = DistillConfig(method=method, ipc=ipc, batch_real=batch_real, preset="paper",  # a paper-length run
                           outer_loop=loops[0] if method != "dm" else None,
                           inner_loop=loops[1] if method != "dm" else None, **overrides)
    hp = resolve_hyperparameters(config, device, laterality=False)
    m = method_class(method)(hp, DataSpec(1, SIZE, NUM_CLASSES), device)
    sampler = RealSampler(list(real.split(real.shape[0] // NUM_CLASSES)))
    labels = torch.arange(NUM_CLASSES, device=device).repeat_interleave(ipc)
    engine = Engine(m, sampler, labels, checkpoint=None, checkpoint_every=0, run_key="bench", source_hash="bench")
    gen = torch.Generator().manual_seed(0)
    box = {"state": initial_state(torch.cat([sampler.sample(c, ipc, gen) for c in range(NUM_CLASSES)]), gen)}

    def iteration() -> float:
        hp.iterations = box["state"].iteration  # run() goes up to and including hp.iterations
        box["state"] = engine.run(box["state"])
        return box["state"].loss_curve[-1][1]

    return iteration, hp


def _timed(fn, device, n: int) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / n


def measure(args: argparse.Namespace, method: str, ipc: int) -> dict:
    import numpy as np
    import torch

    from medcondense.distill.dc import loops_for_ipc

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    np.random.seed(0)
    per_class = max(256, args.batch_real)
    real = torch.randn(NUM_CLASSES * per_class, 1, SIZE, SIZE).to(device)
    outer, inner = loops_for_ipc(ipc) if method != "dm" else (1, 0)
    if method != "dm" and args.max_outer:
        outer = min(outer, args.max_outer)
    loops = (outer, inner)

    sides = {"reference": _reference_runner(Path(args.ref_dir), method, ipc, args.batch_real, loops, real, device)}
    resolved = {}
    for name in args.variants:
        fn, hp = _our_runner(method, ipc, args.batch_real, loops, real, device, VARIANTS[name])
        sides[name] = fn
        resolved[name] = {"amp": hp.amp, "compile": hp.compile, "batch_classes": hp.batch_classes}
    # warm-up: allocator, compile (the first iteration apart; a second one catches the graphs
    # compiled on first use of a grad mode or shape)
    first = {name: _timed(fn, device, 1) for name, fn in sides.items()}
    for fn in sides.values():
        fn()
    rounds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            rounds[name].append(_timed(fn, device, args.iterations))
    ref_median = statistics.median(rounds["reference"])
    rows = []
    for name, times in rounds.items():
        median = statistics.median(times)
        rows.append({
            "side": name, "median_s": median, "best_s": min(times), "rounds_s": times, "first_s": first[name],
            "speedup": ref_median / median, "speedup_best": min(rounds["reference"]) / min(times),
            **({"resolved": resolved[name]} if name in resolved else {}),
        })
    return {"method": method, "ipc": ipc, "batch_real": args.batch_real, "outer_loop": outer, "inner_loop": inner,
            "table_outer_loop": loops_for_ipc(ipc)[0] if method != "dm" else 1,
            "device": str(device), "threads": torch.get_num_threads(), "iterations_per_round": args.iterations,
            "rounds": args.rounds, "rows": rows}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref-dir", default=os.environ.get("MEDCONDENSE_REF_DIR"), help="reference checkout")
    p.add_argument("--method", nargs="+", default=["dc", "dsa", "dm"], choices=("dc", "dsa", "dm"))
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    p.add_argument("--variants", nargs="+", default=["default", "eager-fp32"], choices=tuple(VARIANTS))
    p.add_argument("--iterations", type=int, default=2, help="outer iterations per side and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-real", type=int, default=256, help="the reference's 256 by default")
    p.add_argument("--max-outer", type=int, default=2, help="DC/DSA: outer steps per iteration, both sides (0 = the table's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.ref_dir or not Path(args.ref_dir).is_dir():
        sys.path.insert(0, str(HERE))
        import reference as harness

        print(harness._instructions(args.ref_dir), file=sys.stderr)
        return 2
    if args.child:  # one method/IPC per process: compiled code and peak memory stay its own
        print(json.dumps(measure(args, args.method[0], args.ipc[0])))
        return 0
    results = []
    for method in args.method:
        for ipc in args.ipc:
            cmd = [sys.executable, __file__, "--child", "--ref-dir", args.ref_dir, "--method", method, "--ipc", str(ipc),
                   "--variants", *args.variants, "--iterations", str(args.iterations), "--rounds", str(args.rounds),
                   "--batch-real", str(args.batch_real), "--max-outer", str(args.max_outer), "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
                results.append({"method": method, "ipc": ipc, "error": tail[0]})
                print(f"{method} ipc {ipc}: failed: {tail[0]}", file=sys.stderr, flush=True)
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done: {method} ipc {ipc}", file=sys.stderr, flush=True)
    record = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "device": args.device, "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(args.output)
    print_table(results)
    return 0


def print_table(results: list[dict]) -> None:
    print("| method | IPC | loops | side | s / iteration (median) | best | first (warm-up) | vs reference |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['method']} | {r['ipc']} | | error: {r['error']} | | | | |")
            continue
        loops = "" if r["method"] == "dm" else f"{r['outer_loop']}/{r['table_outer_loop']} outer, {r['inner_loop']} inner"
        for row in r["rows"]:
            print(f"| {r['method']} | {r['ipc']} | {loops} | {row['side']} | {row['median_s']:.3f} | {row['best_s']:.3f} | "
                  f"{row['first_s']:.1f} | {row['speedup']:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
