"""The ``medcondense score`` stage: ``run(config)``, its option checks and ``render``.

What is measured is described in :mod:`medcondense.score`; the pieces live beside this module
(:mod:`.distance`, :mod:`.embedding`, :mod:`.predictor`, :mod:`.privacy`, :mod:`.proxies`). The
real data, its standardization and the random-subset/full baselines come from evaluate's pieces
(:mod:`medcondense.evaluate.data`, :mod:`medcondense.evaluate.baselines`), never its stage module.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from medcondense import store
from medcondense.atomic import write_json
from medcondense.config import ScoreConfig
from medcondense.console import progress
from medcondense.device import describe_device, resolve_device, seed_everything
from medcondense.errors import EXIT_GATE, ConfigError, NoUsableInputError
from medcondense.evaluate.data import RealData, check_matches_real, load_real
from medcondense.score import distance, predictor, privacy, proxies
from medcondense.score.embedding import cap_per_class, embed, random_nets, unit_rows
from medcondense.train import standardize

log = logging.getLogger(__name__)

__all__ = ["run", "render"]


# --------------------------------------------------------------------------- inputs


def _check_options(config: ScoreConfig) -> None:
    """Raise ConfigError for option values that cannot work."""
    if any(k < 1 for k in config.ipc):
        raise ConfigError(f"--ipc must be positive integers, got {config.ipc}")
    if config.indicator not in predictor.INDICATORS:
        raise ConfigError(f"--indicator {config.indicator!r}: expected one of {', '.join(predictor.INDICATORS)}")
    for name in ("repeats", "epochs", "full_steps", "embed_nets", "max_per_class", "ssim_topk"):
        if getattr(config, name) < 1:
            raise ConfigError(f"score.{name} must be at least 1, got {getattr(config, name)}")
    if not 0 < config.ssim_threshold <= 1:
        raise ConfigError(f"--ssim-threshold must lie in (0, 1], got {config.ssim_threshold}")
    if not -1 <= config.cosine_threshold <= 1:
        raise ConfigError(f"--cosine-threshold must lie in [-1, 1], got {config.cosine_threshold}")


def _read_syn(path: str, real: store.ImageSet, real_path: str, allow_mismatch: bool = False) -> store.ImageSet:
    from medcondense.factorised import decoded

    syn = decoded(store.read(path))  # a factorised file is judged on the images a user trains on
    store.require_kind(syn, ("synthetic", "subset"), path, "expected a distilled (synthetic) or subset file as the second file")
    # the privacy audit compares the images with their own source: another source is an error here
    check_matches_real(syn, real, path, real_path=real_path, allow_mismatch=allow_mismatch, source_must_match=True)
    if syn.n == 0:
        raise NoUsableInputError("holds no images", path=path)
    return syn


# --------------------------------------------------------------------------- stages of run


def _run_indicator(config: ScoreConfig, real: RealData, device: torch.device) -> dict:
    """Full-data accuracy and random-subset accuracy at every IPC (evaluate's cached baselines)."""
    from medcondense.evaluate.baselines import real_baselines

    smallest = int(np.bincount(real.train_y).min())
    for ipc in config.ipc:
        if ipc > smallest:
            log.warning("IPC %d exceeds the smallest class (%d train images); such classes use all they have", ipc, smallest)
    start = time.perf_counter()
    with progress("score: indicator", total=config.repeats * (1 + len(config.ipc))) as bar:
        full, randoms = real_baselines(
            real, ipcs=config.ipc, models=config.repeats, epochs=config.epochs, full_steps=config.full_steps,
            device=device, seed=config.seed, tick=bar.advance,
        )
    per_ipc = {
        ipc: {"mean": r["accuracy"]["mean"], "std": r["accuracy"]["std"], "runs": r["accuracy"]["values"],
              "cached": r.get("cached", False)}
        for ipc, r in randoms.items()
    }
    full_block = {"accuracy": full["accuracy"]["mean"], "std": full["accuracy"]["std"], "epochs": full["epochs"],
                  "n_train": full["train_images"], "models": full["models"], "cached": full.get("cached", False)}
    return {"full": full_block, "random": per_ipc, "seconds": round(time.perf_counter() - start, 3)}


def _embed_all(nets, x: torch.Tensor) -> list[torch.Tensor]:
    return [embed(net, x) for net in nets]


def _measure_proxies(config: ScoreConfig, train_emb, train_y, test_emb, test_y, num_classes: int) -> dict:
    """IPC-independent and per-IPC proxies on a per-class-capped sample of the embeddings."""
    rng = np.random.default_rng(config.seed)
    tr = torch.as_tensor(cap_per_class(train_y.cpu().numpy(), config.max_per_class, rng), device=train_y.device)
    te = torch.as_tensor(cap_per_class(test_y.cpu().numpy(), config.max_per_class, rng), device=test_y.device)
    emb = proxies.Embedded(
        train=[unit_rows(e[tr]) for e in train_emb], train_labels=train_y[tr],
        test=[unit_rows(e[te]) for e in test_emb], test_labels=test_y[te], num_classes=num_classes,
    )
    return {
        "global": proxies.measure_proxies(emb),
        "per_ipc": {ipc: proxies.measure_ipc_proxies(emb, ipc, config.seed) for ipc in config.ipc},
        "n_train": int(tr.numel()), "n_test": int(te.numel()),
    }


def _ipc_rows(config: ScoreConfig, measured: dict | None, proxy: dict, calibration: dict) -> list[dict]:
    """One row per IPC: indicator, proxies and predicted gain."""
    rows = []
    for ipc in config.ipc:
        row: dict[str, Any] = {"ipc": ipc}
        features: dict[str, float] = {name: p["value"] for name, p in proxy["per_ipc"][ipc].items()}
        features.update({name: p["value"] for name, p in proxy["global"].items()})
        if measured is not None:
            rnd, full = measured["random"][ipc], measured["full"]["accuracy"]
            row["random_accuracy"] = rnd
            row["random_rel"] = round(rnd["mean"] / full, 4) if full > 0 else None
            features["random_rel"] = row["random_rel"]
        row["proxies"] = proxy["per_ipc"][ipc]
        row["predicted_gain"] = predictor.predict_gain(calibration, ipc, features, config.indicator)
        rows.append(row)
    return rows


def _syn_report(config: ScoreConfig, syn: store.ImageSet, real_train: store.ImageSet, train_index: np.ndarray,
                nets, train_emb, train_y, mean, std, device) -> dict:
    """Distance, coverage and the privacy audit of the second file."""
    syn_x = standardize(syn.images, mean, std).to(device)
    syn_y = torch.as_tensor(syn.labels, device=device)
    syn_emb = _embed_all(nets, syn_x)
    start = time.perf_counter()
    dist = distance.compare_sets([unit_rows(e) for e in train_emb], train_y, [unit_rows(e) for e in syn_emb],
                                 syn_y, real_train.class_names, config.seed)
    dist["seconds"] = round(time.perf_counter() - start, 3)
    settings = privacy.AuditSettings(config.ssim_threshold, config.cosine_threshold, config.ssim_topk)
    start = time.perf_counter()
    report = privacy.audit(syn.images, syn.labels, syn_emb, real_train.images, train_index, train_emb,
                           real_train.class_names, settings, config.seed)
    report["seconds"] = round(time.perf_counter() - start, 3)
    pairs = privacy.save_pairs(report, syn.images, real_train.images, config.pairs_dir) if config.pairs_dir else []
    out = {
        "path": config.syn, "kind": syn.kind, "method": syn.attrs.get("method"), "ipc": syn.attrs.get("ipc"),
        "n": syn.n, "distance": dist, "privacy": privacy.strip_internal(report), "pairs": pairs,
    }
    if syn.kind == "subset":
        out["note"] = ("a subset is a coreset of REAL training images: every image is real by construction, "
                       "so the near-copies below are expected, not a leak discovered")
    return out


def _gate(config: ScoreConfig, syn_report: dict | None) -> int:
    """Exit code of the --fail-on-copies gate (0 or 5), logging why it failed."""
    if not config.fail_on_copies or syn_report is None:
        return 0
    if syn_report["kind"] == "subset":
        log.error("%s is a coreset of real images (kind=subset): it must not be shared where "
                  "near-copies are not allowed (--fail-on-copies)", config.syn)
        return EXIT_GATE
    copies = syn_report["privacy"]["near_copies"]
    if copies:
        log.error("%s holds %d near-cop%s of real training images (SSIM >= %s or cosine >= %s)",
                  config.syn, copies, "y" if copies == 1 else "ies", config.ssim_threshold, config.cosine_threshold)
        return EXIT_GATE
    return 0


# --------------------------------------------------------------------------- run


def _run_calibrate(config: ScoreConfig) -> dict:
    if not config.output:
        raise ConfigError("--calibrate needs -o FILE for the refitted calibration")
    cal = predictor.calibrate(config.calibrate, config.output)
    return {"calibration": config.output, "source": cal["source"], "features": cal["features"],
            "per_ipc": cal["per_ipc"], "n_measured": len(cal["measured"])}


def run(config: ScoreConfig) -> dict:
    """Score a real data set (and optionally a distilled set); return the result dict.

    With ``config.calibrate`` it refits the predictor instead and writes it to ``config.output``.
    The result holds ``exit_code`` 5 when ``fail_on_copies`` is set and the gate fails.
    """
    started = time.time()
    _check_options(config)
    if config.calibrate:
        return _run_calibrate(config)
    calibration, calibration_path = predictor.load_calibration(config.calibration)
    judge = load_real(config.data)  # kind real, train and test splits, standardized tensors
    real = judge.image_set
    syn = _read_syn(config.syn, real, config.data, config.allow_mismatch) if config.syn else None
    device = resolve_device(config.device)
    seed_everything(config.seed)
    log.info("scoring %s on %s", config.data, describe_device(device))

    train_mask = real.split == store.SPLIT_TRAIN
    real_train, train_index = real.select(train_mask), np.flatnonzero(train_mask)
    mean, std = judge.mean, judge.std
    train_x, train_y = judge.train_x.to(device), torch.as_tensor(judge.train_y, device=device)
    test_x, test_y = judge.test_x.to(device), torch.as_tensor(judge.test_y, device=device)

    # the fast indicator trains nothing: its prediction comes from the random-ConvNet proxies below
    measured = _run_indicator(config, judge, device) if config.ipc and config.indicator == "full" else None
    start = time.perf_counter()
    nets = random_nets(real.image_shape[0], real.image_shape[1], config.embed_nets, config.seed, device)
    train_emb, test_emb = _embed_all(nets, train_x), _embed_all(nets, test_x)
    embedding_seconds = round(time.perf_counter() - start, 3)
    proxy = _measure_proxies(config, train_emb, train_y, test_emb, test_y, real.num_classes)

    result: dict[str, Any] = {
        "data": config.data,
        "classes": real.class_names,
        "n_train": int(train_mask.sum()),
        "evaluated_on": "test",
        "indicator": config.indicator,
        "device": describe_device(device),
        "seed": config.seed,
        "full_data": measured["full"] if measured else None,
        "indicator_seconds": measured["seconds"] if measured else 0.0,
        "ipc": _ipc_rows(config, measured, proxy, calibration),
        "proxies": proxy["global"],
        "proxy_sample": {"train": proxy["n_train"], "test": proxy["n_test"], "nets": config.embed_nets},
        "embedding_seconds": embedding_seconds,
        "calibration": {"path": str(calibration_path), "source": calibration["source"],
                        "provisional": bool(calibration.get("provisional", False))},
        "syn": None,
    }
    if syn is not None:
        result["syn"] = _syn_report(config, syn, real_train, train_index, nets, train_emb, train_y, mean, std, device)
    if config.per_site:
        from medcondense.score.sites import per_site_report

        syn_emb = _embed_all(nets, standardize(syn.images, mean, std).to(device)) if syn is not None else None
        result["per_site"] = per_site_report(config, judge, syn, syn_emb, train_emb, device)
    result["wall_time_s"] = round(time.time() - started, 3)
    if config.output:
        write_json(config.output, result)
    result["exit_code"] = _gate(config, result["syn"])
    return result


# --------------------------------------------------------------------------- render


def _pm(stats: dict | None) -> str:
    return "-" if not stats else f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def _gain(pred: dict) -> str:
    if pred.get("gain") is None:
        return f"- ({pred.get('note', 'n/a')})"
    text = f"{pred['gain']:+.3f} ± {pred['loo_mae']:.3f}"
    if pred.get("note"):  # calibrated at another IPC
        text += f" (from IPC {pred['ipc_used']})"
    return text + (" provisional" if pred.get("provisional") else "")


def _render_before(result: dict, console: Any) -> None:
    from rich.table import Table

    full = result.get("full_data")
    table = Table(title=f"score {result['data']}: will distilling pay?")
    for col in ("IPC", "random subset acc", "random / full", "predicted gain ± LOO MAE"):
        table.add_column(col)
    for row in result["ipc"]:
        table.add_row(str(row["ipc"]), _pm(row.get("random_accuracy")),
                      "-" if row.get("random_rel") is None else f"{row['random_rel']:.3f}", _gain(row["predicted_gain"]))
    console.print(table)
    if full:
        console.print(f"full data: accuracy {full['accuracy']:.3f} ({full['epochs']} epochs, {full['n_train']} images; "
                      f"indicator {result['indicator_seconds']:.1f} s)")
    proxy_table = Table(title=f"cheap proxies (random ConvNets; embedding {result['embedding_seconds']:.2f} s)")
    proxy_table.add_column("proxy")
    proxy_table.add_column("IPC")
    proxy_table.add_column("value")
    proxy_table.add_column("seconds")
    for name, p in result["proxies"].items():
        proxy_table.add_row(name, "all", f"{p['value']:.4f}", f"{p['seconds']:.3f}")
    for row in result["ipc"]:
        for name, p in row["proxies"].items():
            proxy_table.add_row(name, str(row["ipc"]), f"{p['value']:.4f}", f"{p['seconds']:.3f}")
    console.print(proxy_table)
    cal = result["calibration"]
    console.print(f"predictor: {cal['source']}" + (" [PROVISIONAL]" if cal["provisional"] else ""), markup=False)


def _render_after(syn: dict, console: Any) -> None:
    from rich.table import Table

    d, p = syn["distance"], syn["privacy"]
    table = Table(title=f"{syn['path']} ({syn['kind']}, {syn['n']} images) vs the real train split")
    for col in ("measure", "this set", "random real subset / real-vs-real"):
        table.add_column(col)
    table.add_row("MMD (lower = closer)", f"{d['mmd']:.4f}", f"{d['mmd_random_subset']:.4f}")
    table.add_row("coverage", f"{d['coverage']:.3f}", f"{d['coverage_random_subset']:.3f}")
    table.add_row("classes present", f"{d['classes_present']}/{d['classes_total']}", "")
    for key in ("ssim", "cosine"):
        mine, base = p["syn_vs_real"][key], p["real_vs_real"][key]
        table.add_row(f"nearest-real {key} p50 / p99 / max",
                      f"{mine.get('p50', 0):.3f} / {mine.get('p99', 0):.3f} / {mine.get('max', 0):.3f}",
                      f"{base.get('p50', 0):.3f} / {base.get('p99', 0):.3f} / {base.get('max', 0):.3f}" if base else "-")
    table.add_row("near-copies", f"{p['near_copies']} (SSIM >= {p['thresholds']['ssim']} or cosine >= "
                  f"{p['thresholds']['cosine']})", "")
    console.print(table)
    if syn.get("note"):
        console.print(f"note: {syn['note']}", markup=False)
    for path in syn["pairs"]:
        console.print(f"pair saved: {path}", markup=False)


def render(result: dict, console: Any) -> None:
    """Print the score as rich tables on ``console`` (stdout)."""
    if "per_ipc" in result and "calibration" in result and "ipc" not in result:
        console.print(f"calibration written to {result['calibration']} ({result['n_measured']} measurements)", markup=False)
        for ipc, model in result["per_ipc"].items():
            console.print(f"  IPC {ipc}: LOO MAE {model['loo_mae']:.3f} (constant: {model['loo_mae_constant']:.3f}), "
                          f"{model['n_datasets']} data sets", markup=False)
        return
    if result.get("skipped"):
        console.print(f"{result.get('output')} is up to date", markup=False)
        return
    _render_before(result, console)
    if result.get("syn"):
        _render_after(result["syn"], console)
    if result.get("per_site"):
        _render_sites(result["per_site"], console)


def _render_sites(per_site: dict, console: Any) -> None:
    from rich.table import Table

    table = Table(title="per site: indicator (random / full at the site) and privacy audit against the site's train images")
    for col in ("site", "train", "test", "full acc", "random / full by IPC", "near-copies"):
        table.add_column(col)
    for name, entry in per_site.items():
        full = entry.get("full_data")
        rel = ", ".join(f"{row['ipc']}: {row['random_rel']:.3f}" for row in entry.get("ipc", []) if row.get("random_rel") is not None)
        privacy = entry.get("privacy")
        table.add_row(name, str(entry["n_train"]), str(entry["n_test"]), f"{full['accuracy']:.3f}" if full else "-",
                      rel or entry.get("note", "-"), str(privacy["near_copies"]) if privacy else "-")
    console.print(table)
