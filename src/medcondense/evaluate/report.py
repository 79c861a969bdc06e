"""Presentation of an evaluate report: rich tables (:func:`render`) and the plot (:func:`write_plot`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcondense.atomic import atomic_path


def write_plot(report: dict[str, Any], path: str | Path) -> None:
    """Accuracy vs IPC: one line per method (mean ± std), the random baseline, the full level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in results}):
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["ipc"])
        acc = [r["metrics"]["accuracy"] for r in rows]
        ax.errorbar([r["ipc"] for r in rows], [a["mean"] for a in acc], yerr=[a["std"] for a in acc],
                    marker="o", capsize=3, label=method)
    randoms = {r["ipc"]: r["baselines"]["random"]["metrics"]["accuracy"] for r in results if "random" in r["baselines"]}
    if randoms:
        ipcs = sorted(randoms)
        ax.errorbar(ipcs, [randoms[i]["mean"] for i in ipcs], yerr=[randoms[i]["std"] for i in ipcs],
                    marker="s", linestyle="--", color="grey", capsize=3, label="random real")
    fulls = [r["baselines"]["full"]["metrics"]["accuracy"]["mean"] for r in results if "full" in r["baselines"]]
    if fulls:
        ax.axhline(fulls[0], color="black", linestyle=":", label="full train split")
    ax.set_xscale("log")
    ax.set_xlabel("images per class")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{report['protocol']['arch']}, {report['protocol']['models']} models")
    ax.legend()
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)


def _pm(block: dict[str, Any] | None) -> str:
    if not block or block.get("mean") is None:
        return "-"
    return f"{100 * block['mean']:.1f}±{100 * block['std']:.1f}"


def _baseline_rows(results: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Distinct baselines of a report: random per IPC (ascending), then full."""
    randoms = {r["baselines"]["random"]["ipc"]: r["baselines"]["random"] for r in results if "random" in r["baselines"]}
    rows = [("random", randoms[ipc]) for ipc in sorted(randoms)]
    fulls = [r["baselines"]["full"] for r in results if "full" in r["baselines"]]
    return rows + ([("full", fulls[0])] if fulls else [])


def render(result: dict[str, Any], console) -> None:
    """The report as rich tables: the inputs, the baselines, and per-class recall."""
    from rich.table import Table

    if result.get("sites"):
        render_sites(result, console)
        return
    protocol, real = result["protocol"], result["real"]
    site = f" of site {real['test_site']}" if real.get("test_site") else ""
    # Three narrow tables rather than one wide one: readable in an 80-column terminal.
    table = Table(title=f"evaluate: {protocol['arch']} x{protocol['models']}, {protocol['epochs']} epochs, "
                        f"tested on {real['test_images']} real images{site}")
    for column in ("set", "method", "ipc", "acc %", "bal. acc %", "AUC %", "recovery"):
        table.add_column(column, justify="left" if column in ("set", "method") else "right",
                         no_wrap=column not in ("set", "method"))
    for r in result["results"]:
        recovery = (r.get("recovery") or {}).get("accuracy")
        table.add_row(
            Path(r["file"]).name, r["method"], str(r["ipc"]), _pm(r["metrics"]["accuracy"]),
            _pm(r["metrics"]["balanced_accuracy"]), _pm(r["metrics"]["auc"]),
            f"{100 * recovery:.0f} %" if recovery is not None else "-",
        )
    console.print(table)
    rows = _baseline_rows(result["results"])
    if rows:
        full_epochs = protocol["full_baseline"]["epochs"]
        baselines = Table(title=f"baselines on real train images (full: {full_epochs} epochs)")
        for column in ("baseline", "ipc", "images", "acc %", "bal. acc %", "AUC %", "cached"):
            baselines.add_column(column, justify="left" if column == "baseline" else "right", no_wrap=True)
        for name, block in rows:
            m = block["metrics"]
            baselines.add_row(name, str(block.get("ipc", "all")), str(block["train_images"]), _pm(m["accuracy"]),
                              _pm(m["balanced_accuracy"]), _pm(m["auc"]), "yes" if block.get("cached") else "no")
        console.print(baselines)
    recall = Table(title="per-class recall % (mean over models)")
    recall.add_column("set")
    for name in real["class_names"]:
        recall.add_column(name, justify="right")
    for r in result["results"]:
        means = r["metrics"]["per_class_recall"]["mean"]
        recall.add_row(Path(r["file"]).name, *("-" if m is None else f"{100 * m:.0f}" for m in means))
    console.print(recall)
    if result.get("output"):
        console.print(f"report: {result['output']}" + (f", plot: {result['plot']}" if result.get("plot") else ""))


def render_sites(result: dict[str, Any], console) -> None:
    """A cross-site report: per input, the accuracy at each site, the mean of sites and pooled;
    then each site's baselines (trained at the site, tested at every site)."""
    from rich.table import Table

    protocol, sites = result["protocol"], [s["name"] for s in result["sites"]]
    table = Table(title=f"evaluate at {len(sites)} sites: {protocol['arch']} x{protocol['models']}, "
                        f"{protocol['epochs']} epochs (accuracy %, recovery vs the site's full baseline)")
    for column in ("set", "ipc", "trained on", *sites, "mean of sites", "pooled"):
        table.add_column(column, justify="left" if column in ("set", "trained on") else "right")
    for r in result["results"]:
        cells = []
        for name in sites:
            block = r["per_site"][name]
            recovery = (block.get("recovery") or {}).get("accuracy")
            cells.append(_pm(block["metrics"]["accuracy"]) + (f" ({100 * recovery:.0f} %)" if recovery is not None else ""))
        mean = r["mean_of_sites"]["accuracy"]
        trained = ", ".join(f"{k} {v}" for k, v in r.get("train_sites", {}).items()) or "-"
        table.add_row(Path(r["file"]).name, str(r["ipc"]), trained, *cells,
                      "-" if mean is None else f"{100 * mean:.1f}", _pm(r["metrics"]["accuracy"]))
    console.print(table)
    if result.get("site_baselines"):
        baselines = Table(title="each site's baselines, tested at every site (accuracy %)")
        for column in ("trained at", "baseline", *sites, "pooled"):
            baselines.add_column(column, justify="left" if column in ("trained at", "baseline") else "right")
        for train_site, entry in result["site_baselines"].items():
            for ipc, tested in (entry.get("random") or {}).items():
                baselines.add_row(train_site, f"random ipc {ipc}", *(_pm(tested[t]["accuracy"]) for t in [*sites, "pooled"]))
            if entry.get("full"):
                baselines.add_row(train_site, "full", *(_pm(entry["full"][t]["accuracy"]) for t in [*sites, "pooled"]))
        console.print(baselines)
    if result.get("output"):
        console.print(f"report: {result['output']}" + (f", plot: {result['plot']}" if result.get("plot") else ""))
