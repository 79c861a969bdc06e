"""Several sites, one distilled set: does the merged synthetic set work at every site?

Issue #10 (tracker #13). Sites are the brain-region patch task (aal10) cut from different real
brains by examples/sites.py: ``colin27`` (shipped), ``icbm152`` (the MNI ICBM152 average of 152
people, from the nilearn wheel) and, with ``--shifted``, ``colin27_shifted`` (SIMULATED: Colin27
through a simulated scanner). The first site is ingested with explicit settings, the others with
its protocol. For every IPC ``n`` (and method, DM by default; DSA where the budget allows):

* ``local <site>``: the site's own synthetic set (IPC n), tested at every site;
* ``local <site> @2n``: the same at IPC 2n -- **equal size** to the merge, or the merge would win
  only by having twice the images;
* ``merged``: the sites' IPC-n synthetic sets merged (``medcondense merge``: 2n a class for two
  sites);
* ``random merged @2n``: a random real subset of the pooled real data, 2n a class (equal size);
* ``pooled real``: the merged real train splits (the centralised upper bound);
* ``own full <site>``: each site's whole train split.

Every row is one input of a single cross-site ``evaluate --real A --real B ...`` run per IPC: the
same nets tested at every site (per site, mean of sites, pooled), with each site's random and full
baselines. The goal the issue sets: the merged synthetic set beats every single site's synthetic
set on the *other* sites' test splits, and comes within the recovery the single-site table
reaches. The script prints both checks as measured, whichever way they come out.

Resume and caching: every intermediate is a medcondense file in ``benchmarks/work/sites/<preset>``
(ingest, distill, merge and evaluate skip a finished identical run), so a re-run only prints.
Results: ``benchmarks/results/sites_<preset>.json`` and a markdown table (``.md``, and stdout).

    OMP_NUM_THREADS=2 python benchmarks/sites.py --preset reduced      # a few CPU minutes
    python benchmarks/sites.py --preset full --device cuda --shifted --methods dm dsa
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "sites"
RESULTS = ROOT / "benchmarks" / "results"
log = logging.getLogger("benchmarks.sites")


@dataclass(frozen=True)
class Preset:
    """Everything that decides the numbers apart from the sites."""

    name: str
    train_per_class: int
    test_per_class: int
    size: int
    ipcs: tuple[int, ...]
    methods: tuple[str, ...]
    iterations: dict[str, int]
    batch_real: int
    eval_models: int
    eval_epochs: int
    full_steps: int
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


PRESETS = {
    # fits a few CPU minutes on a shared 2-core machine: small sites, DM only, short training
    "reduced": Preset("reduced", train_per_class=40, test_per_class=20, size=16, ipcs=(1, 5), methods=("dm",),
                      iterations={"dm": 40, "dsa": 10}, batch_real=32, eval_models=2, eval_epochs=60,
                      full_steps=150),
    # the table: a GPU (or hours of CPU)
    "full": Preset("full", train_per_class=400, test_per_class=150, size=32, ipcs=(1, 10), methods=("dm", "dsa"),
                   iterations={"dm": 20000, "dsa": 1000}, batch_real=256, eval_models=5, eval_epochs=300,
                   full_steps=1000),
}


def _example() -> Any:
    """examples/sites.py as a module (under another name: this file is called sites.py too)."""
    import importlib.util

    name = "examples_sites"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "sites.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def _done(call: Any) -> dict[str, Any]:
    """Run a stage; an identical earlier run counts as done."""
    from medcondense.errors import AlreadyDone

    try:
        return call()
    except AlreadyDone as done:
        return {"skipped": True, **(done.result or {})}


def build_sites(preset: Preset, sites: list[str], work: Path) -> dict[str, Path]:
    """The sites' trees and their ingest with the first site's protocol (cached by run key)."""
    example = _example()
    manifests = {}
    for name in sites:
        manifest = work / name / "nifti" / "manifest.csv"
        if not manifest.is_file():
            manifest = example.build_site(name, work / name, train_per_class=preset.train_per_class,
                                          test_per_class=preset.test_per_class, seed=preset.seed, overwrite=True)
        manifests[name] = manifest
    settings = {**example.PROTOCOL_SETTINGS, "size": preset.size}
    # re-ingest each run (seconds): the content hash stays, so every later stage stays cached
    results = example.ingest_sites(manifests, work, settings=settings, seed=preset.seed, overwrite=True)
    return {name: Path(r["output"]) if r.get("output") else work / f"{name}.h5" for name, r in results.items()}


def distill(preset: Preset, data: Path, method: str, ipc: int, out: Path, device: str) -> Path:
    from medcondense.config import DistillConfig
    from medcondense.distill import pipeline

    _done(lambda: pipeline.run(DistillConfig(
        input=str(data), output=str(out), method=method, ipc=ipc, iterations=preset.iterations.get(method),
        batch_real=preset.batch_real, device=device, seed=preset.seed,
        preset="paper" if preset.name == "full" else "quick")))
    return out


def merge(parts: list[Path], out: Path, site_names: list[str] | None = None) -> Path:
    from medcondense.config import MergeConfig
    from medcondense.merge import pipeline

    _done(lambda: pipeline.run(MergeConfig(inputs=[str(p) for p in parts], output=str(out),
                                           site_names=site_names or [])))
    return out


def evaluate(preset: Preset, inputs: list[Path], reals: list[Path], out: Path, device: str) -> dict[str, Any]:
    from medcondense.config import EvaluateConfig
    from medcondense.evaluate import pipeline

    _done(lambda: pipeline.run(EvaluateConfig(
        inputs=[str(p) for p in inputs], real=[str(r) for r in reals], models=preset.eval_models,
        epochs=preset.eval_epochs, full_steps=preset.full_steps, device=device, seed=preset.seed,
        output=str(out))))
    return json.loads(out.read_text())


def rows_for(preset: Preset, site_h5: dict[str, Path], method: str, ipc: int, work: Path, device: str) -> dict[str, Path]:
    """Label -> input file of one IPC's cross-site evaluate (see the module docstring)."""
    names = list(site_h5)
    rows: dict[str, Path] = {}
    local = {s: distill(preset, site_h5[s], method, ipc, work / f"syn_{s}_{method}_ipc{ipc}.h5", device) for s in names}
    for s in names:
        rows[f"local {s}"] = local[s]
    equal = ipc * len(names)
    for s in names:
        rows[f"local {s} @{equal}"] = distill(preset, site_h5[s], method, equal,
                                              work / f"syn_{s}_{method}_ipc{equal}.h5", device)
    rows["merged"] = merge([local[s] for s in names], work / f"syn_merged_{method}_ipc{ipc}.h5", names)
    pooled = merge([site_h5[s] for s in names], work / "real_merged.h5")
    rows[f"random merged @{equal}"] = distill(preset, pooled, "random", equal, work / f"random_merged_ipc{equal}.h5", device)
    rows["pooled real"] = pooled
    for s in names:
        rows[f"own full {s}"] = site_h5[s]
    return rows


# --------------------------------------------------------------------------- table


def _pct(block: dict | None) -> str:
    if not block or block.get("mean") is None:
        return "-"
    return f"{100 * block['mean']:.1f}±{100 * block['std']:.1f}"


def summarize(report: dict[str, Any], rows: dict[str, Path]) -> dict[str, Any]:
    """Per row: accuracy at each site, mean of sites, pooled; plus the goal checks."""
    by_file = {r["file"]: r for r in report["results"]}
    sites = [s["name"] for s in report["sites"]]
    table: dict[str, Any] = {}
    for label, path in rows.items():
        r = by_file[str(path)]
        table[label] = {
            "per_site": {s: r["per_site"][s]["metrics"]["accuracy"] for s in sites},
            "recovery": {s: (r["per_site"][s]["recovery"] or {}).get("accuracy") for s in sites},
            "mean_of_sites": r["mean_of_sites"]["accuracy"], "pooled": r["metrics"]["accuracy"],
            "train_images": r["train_images"],
        }
    baselines = {s: {"full": report["results"][0]["per_site"][s]["baselines"].get("full", {}).get("metrics", {}).get("accuracy"),
                     "random": report["results"][0]["per_site"][s]["baselines"].get("random", {}).get("metrics", {}).get("accuracy")}
                 for s in sites}
    checks = []
    merged = table["merged"]["per_site"]
    equal = next(label.rsplit("@", 1)[1] for label in table if label.startswith("local ") and "@" in label)
    for s in sites:
        others = [t for t in sites if t != s]

        def on_others(label: str) -> float:
            return sum(table[label]["per_site"][t]["mean"] for t in others) / len(others)

        recovery_local_own = table[f"local {s}"]["recovery"][s]
        recovery_merged = table["merged"]["recovery"][s]
        checks.append({
            "local": s, "other_sites": others, "local_acc": on_others(f"local {s}"),
            "local_equal_size_acc": on_others(f"local {s} @{equal}"), "merged_acc": on_others("merged"),
            "merged_beats_local": on_others("merged") > on_others(f"local {s}"),
            "merged_beats_local_equal_size": on_others("merged") > on_others(f"local {s} @{equal}"),
            # the single-site situation: a site's own set tested at that site, against the merge there
            "recovery_local_at_own_site": recovery_local_own, "recovery_merged_at_site": recovery_merged,
            "merged_within_single_site_recovery": (recovery_merged is not None and recovery_local_own is not None
                                                   and recovery_merged >= recovery_local_own),
        })
    return {"sites": sites, "rows": table, "site_baselines": baselines, "checks": checks}


def markdown(ipc: int, method: str, summary: dict[str, Any]) -> str:
    sites = summary["sites"]
    head = ["set", "images", *[f"at {s}" for s in sites], "mean of sites", "pooled"]
    lines = [f"**{method.upper()}, IPC {ipc}** (test accuracy %, mean ± std over the evaluation nets)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, row in summary["rows"].items():
        cells = [label, str(row["train_images"]), *[_pct(row["per_site"][s]) for s in sites],
                 f"{100 * row['mean_of_sites']:.1f}" if row["mean_of_sites"] is not None else "-", _pct(row["pooled"])]
        lines.append("| " + " | ".join(cells) + " |")
    for s, b in summary["site_baselines"].items():
        lines.append(f"| baseline: {s} random IPC {ipc} / full (at {s}) | | "
                     + " | ".join(_pct(b["random"]) + " / " + _pct(b["full"]) if t == s else "" for t in sites) + " | | |")
    lines.append("")
    for c in summary["checks"]:
        verdict = "beats" if c["merged_beats_local"] else "does NOT beat"
        equal = "beats" if c["merged_beats_local_equal_size"] else "does NOT beat"
        lines.append(f"- on the sites other than {c['local']} ({', '.join(c['other_sites'])}): merged "
                     f"{100 * c['merged_acc']:.1f} % {verdict} local {c['local']} {100 * c['local_acc']:.1f} % "
                     f"and {equal} it at equal size ({100 * c['local_equal_size_acc']:.1f} %)")
        if c["recovery_merged_at_site"] is not None and c["recovery_local_at_own_site"] is not None:
            within = "reaches" if c["merged_within_single_site_recovery"] else "does NOT reach"
            lines.append(f"- at {c['local']}: merged recovery {100 * c['recovery_merged_at_site']:.0f} % {within} the "
                         f"single-site recovery (local {c['local']} at its own site: "
                         f"{100 * c['recovery_local_at_own_site']:.0f} %)")
    return "\n".join(lines) + "\n"


def _machine(device: str) -> dict[str, Any]:
    import torch

    from medcondense.device import describe_device, resolve_device

    return {"device": describe_device(resolve_device(device)), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reduced")
    parser.add_argument("--sites", default="colin27,icbm152", help="comma list (default colin27,icbm152)")
    parser.add_argument("--shifted", action="store_true", help="add the SIMULATED colin27_shifted site")
    parser.add_argument("--methods", nargs="+", default=None, help="override the preset's methods (dm, dsa, dc)")
    parser.add_argument("--ipcs", nargs="+", type=int, default=None, help="override the preset's IPCs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    preset = PRESETS[args.preset]
    if args.methods:
        preset = Preset(**{**asdict(preset), "methods": tuple(args.methods)})
    if args.ipcs:
        preset = Preset(**{**asdict(preset), "ipcs": tuple(args.ipcs)})
    sites = [s.strip() for s in args.sites.split(",") if s.strip()] + (["colin27_shifted"] if args.shifted else [])
    work = args.work / preset.name / "_".join(sites)
    work.mkdir(parents=True, exist_ok=True)
    started, cpu0 = time.time(), _cpu_seconds()
    site_h5 = build_sites(preset, sites, work)
    out: dict[str, Any] = {"preset": asdict(preset), "sites": sites, "machine": _machine(args.device), "tables": []}
    text = []
    for method in preset.methods:
        for ipc in preset.ipcs:
            rows = rows_for(preset, site_h5, method, ipc, work, args.device)
            report = evaluate(preset, list(rows.values()), list(site_h5.values()),
                              work / f"report_{method}_ipc{ipc}.json", args.device)
            summary = summarize(report, rows)
            out["tables"].append({"method": method, "ipc": ipc, **summary})
            text.append(markdown(ipc, method, summary))
    out["wall_seconds"] = round(time.time() - started, 1)
    out["cpu_seconds"] = round(_cpu_seconds() - cpu0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sites_{preset.name}.json").write_text(json.dumps(out, indent=1, default=str))
    md = "\n".join(text) + f"\nwall {out['wall_seconds']} s, CPU {out['cpu_seconds']} s (this run; cached cells cost nothing)\n"
    (RESULTS / f"sites_{preset.name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
