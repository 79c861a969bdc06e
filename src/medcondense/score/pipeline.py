"""The ``medcondense score`` stage: ``run(config)``, its option checks and ``render``.

What is measured is described in :mod:`medcondense.score`; the pieces live beside this module
(:mod:`.distance`, :mod:`.embedding`, :mod:`.predictor`, :mod:`.privacy`, :mod:`.proxies`). The
real data, its standardization and the random-subset/full baselines come from evaluate's pieces
(:mod:`medcondense.evaluate.data`, :mod:`medcondense.evaluate.baselines`), never its stage module.
"""

from __future__ import annotations

import dataclasses
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
from medcondense.score import distance, membership, predictor, privacy, proxies
from medcondense.score.embedding import cap_per_class, embed, random_nets, unit_rows
from medcondense.train import standardize

log = logging.getLogger(__name__)

__all__ = ["run", "render"]


# --------------------------------------------------------------------------- inputs


DEFAULT_IPCS = [1, 10, 50]


def resolve_ipcs(config: ScoreConfig) -> list[int]:
    """The indicator's IPCs: as given; by default 1,10,50, or none when a synthetic file is scored."""
    value = config.ipc
    if value is None:
        return [] if config.syn else list(DEFAULT_IPCS)
    if isinstance(value, (str, int)):
        value = [v for v in str(value).split(",") if v.strip()]
    try:
        ipcs = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"--ipc must be positive integers, got {config.ipc}") from None
    return ipcs


def _check_options(config: ScoreConfig) -> None:
    """Raise ConfigError for option values that cannot work (``config.ipc`` already resolved)."""
    if any(k < 1 for k in config.ipc):
        raise ConfigError(f"--ipc must be positive integers, got {config.ipc}")
    if config.indicator not in predictor.INDICATORS:
        raise ConfigError(f"--indicator {config.indicator!r}: expected one of {', '.join(predictor.INDICATORS)}")
    _check_mia_options(config)
    for name in ("repeats", "epochs", "full_steps", "embed_nets", "max_per_class", "ssim_topk"):
        if getattr(config, name) < 1:
            raise ConfigError(f"score.{name} must be at least 1, got {getattr(config, name)}")
    if not 0 < config.ssim_threshold <= 1:
        raise ConfigError(f"--ssim-threshold must lie in (0, 1], got {config.ssim_threshold}")
    if not -1 <= config.cosine_threshold <= 1:
        raise ConfigError(f"--cosine-threshold must lie in [-1, 1], got {config.cosine_threshold}")


def _mia_settings(config: ScoreConfig) -> membership.MIASettings:
    nonmembers = config.mia_nonmembers
    if isinstance(nonmembers, str):
        nonmembers = [v.strip() for v in nonmembers.split(",") if v.strip()]
    return membership.MIASettings(
        loss=bool(config.mia), models=config.mia_models, shadows=config.mia_shadows or 0, nonmembers=list(nonmembers),
        unit=config.mia_unit, epochs=config.mia_epochs or config.epochs, full_steps=config.full_steps,
        train_aug=config.mia_train_aug, bootstrap=config.mia_bootstrap, seed=config.seed,
    )


def _mia_asked(config: ScoreConfig) -> bool:
    """Whether the user asked for the membership audit explicitly (then its failures are errors)."""
    return bool(config.mia or config.mia_shadows or config.max_mia_auc is not None or config.max_mia_tpr is not None)


def _check_mia_options(config: ScoreConfig) -> None:
    """ConfigError (exit 2) for membership-audit options that cannot work."""
    if _mia_asked(config) and not config.syn:
        raise ConfigError("--mia, --mia-shadows and the MIA gates audit a distilled set: give DATA and SYN")
    membership.check_settings(_mia_settings(config))
    membership.check_gate_values(config.max_mia_auc, config.max_mia_tpr)
    if config.mia_train_aug not in ("none", "dsa"):
        raise ConfigError(f"score.mia_train_aug {config.mia_train_aug!r}: expected none or dsa")
    if isinstance(config.mia_bootstrap, bool) or not isinstance(config.mia_bootstrap, int) or config.mia_bootstrap < 100:
        raise ConfigError(f"score.mia_bootstrap {config.mia_bootstrap!r}: expected a whole number >= 100")
    if config.mia_epochs is not None and config.mia_epochs < 1:
        raise ConfigError(f"score.mia_epochs must be at least 1, got {config.mia_epochs}")


def _check_source(config: ScoreConfig, syn: store.ImageSet, real: RealData) -> None:
    """``--mia`` judges a set against the data it came from: a recorded source hash must be DATA's."""
    recorded = syn.attrs.get("source_hash")
    if recorded and recorded != real.content_hash:
        message = (f"was distilled from another file (source_hash {str(recorded)[:12]}...), not from "
                   f"{config.data} (content_hash {real.content_hash[:12]}...): its members are not this file's train split")
        if config.mia or config.mia_shadows:
            raise ConfigError(message, path=config.syn)
        log.warning("%s: %s; the set-distance audit below plays the wrong game", config.syn, message)


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
    if syn.attrs.get("dp"):
        out["dp"] = syn.attrs["dp"]
    return out


def _membership_audit(config: ScoreConfig, syn: store.ImageSet, judge: RealData, nets, device) -> dict:
    """The membership-inference audit (set distance always; loss with --mia; LiRA with --mia-shadows)."""
    from medcondense.evaluate.baselines import BaselineCache

    settings = _mia_settings(config)
    inputs = membership.AuditInputs(
        real=judge.image_set, real_path=config.data, content_hash=judge.content_hash, syn=syn, mean=judge.mean,
        std=judge.std, nets=nets, embed=embed, device=device,
        laterality=bool(judge.image_set.attrs.get("laterality", True)), cache=BaselineCache(config.data),
        shadow_distill=_shadow_distiller(config, syn, judge, device) if settings.shadows else None,
    )
    steps = 3 + (4 if settings.loss or settings.shadows else 0) + settings.shadows
    with progress("score: membership audit", total=steps) as bar:
        audit = membership.run_audit(inputs, settings, tick=bar.advance)
    return audit


def _shadow_distiller(config: ScoreConfig, syn: store.ImageSet, judge: RealData, device):
    """LiRA's shadows: the set's own method and settings, distilled from random halves of the game.

    The settings come from the synthetic file's ``hyperparameters`` attribute; the half becomes the
    train split of a temporary real file (deleted afterwards).
    """
    import tempfile
    from pathlib import Path

    from medcondense.config import DistillConfig
    from medcondense.distill import pipeline as distill_pipeline

    hp = syn.attrs.get("hyperparameters")
    if not isinstance(hp, dict) or "method" not in hp:
        raise ConfigError("--mia-shadows needs the set's distillation settings (attribute hyperparameters)",
                          path=config.syn)
    real = judge.image_set
    game_rows = np.flatnonzero((real.split == store.SPLIT_TRAIN) |
                               np.isin(real.split, [membership.NONMEMBER_SPLITS[s] for s in _mia_settings(config).nonmembers]))

    def distill_half(inside: np.ndarray, seed: int) -> tuple[torch.Tensor, np.ndarray]:
        half = real.select(game_rows)
        half.split = np.where(inside, store.SPLIT_TRAIN, store.SPLIT_TEST).astype(np.uint8)
        half.attrs = {k: v for k, v in half.attrs.items() if k not in ("content_hash", "provenance")}
        method = hp["method"]
        options: dict[str, Any] = dict(ipc=int(hp.get("ipc") or syn.attrs.get("ipc") or 1), seed=seed,
                                       device=config.device, overwrite=True)
        extra = hp.get("extra") or {}
        if method == "dp-dm":
            dp = extra.get("dp", {})
            options.update(method="dm", dp_epsilon=dp.get("epsilon"), dp_delta=dp.get("delta"), dp_clip=dp.get("clip", 1.0),
                           dp_unit=dp.get("unit", "patient"), dp_queries=dp.get("queries", 50),
                           dp_accountant=dp.get("accountant", "rdp"))
        else:
            options["method"] = method
        if method in ("dc", "dsa", "dm", "dp-dm"):
            options.update(iterations=hp.get("iterations"), lr_img=hp.get("lr_img"), batch_real=hp.get("batch_real"),
                           aug=hp.get("aug") or ["none"])
            if method != "dp-dm":
                options["init"] = hp.get("init")
            if method in ("dc", "dsa"):
                options.update(outer_loop=hp.get("outer_loop"), inner_loop=hp.get("inner_loop"))
        with tempfile.TemporaryDirectory(prefix="medcondense-shadow-") as tmp:
            source, out = Path(tmp) / "half.h5", Path(tmp) / "shadow.h5"
            store.write(source, half)
            distill_pipeline.run(DistillConfig(input=str(source), output=str(out), checkpoint_every=0, **options))
            shadow = store.read(out)
        return standardize(shadow.images, judge.mean, judge.std), shadow.labels

    return distill_half


def _gate(config: ScoreConfig, syn_report: dict | None) -> int:
    """Exit code of the gates: 5 when --fail-on-copies or an MIA gate fails, 3 when the MIA gates
    cannot judge (splits not exchangeable), else 0; logs why."""
    codes = [_copies_gate(config, syn_report)]
    if syn_report is not None and "mia" in syn_report["privacy"]:
        audit = {"mia": syn_report["privacy"]["mia"], "exchangeability": syn_report["privacy"]["mia_exchangeable"]}
        code, reasons = membership.gate(audit, config.max_mia_auc, config.max_mia_tpr)
        for reason in reasons:
            log.error("%s: %s", config.syn, reason)
        codes.append(code)
    return EXIT_GATE if EXIT_GATE in codes else max(codes)


def _copies_gate(config: ScoreConfig, syn_report: dict | None) -> int:
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
    config = dataclasses.replace(config, ipc=resolve_ipcs(config))
    _check_options(config)
    if config.calibrate:
        return _run_calibrate(config)
    calibration, calibration_path = predictor.load_calibration(config.calibration)
    judge = load_real(config.data)  # kind real, train and test splits, standardized tensors
    real = judge.image_set
    syn = _read_syn(config.syn, real, config.data, config.allow_mismatch) if config.syn else None
    if syn is not None:
        _check_source(config, syn, judge)
    if config.per_site:
        from medcondense.score.sites import site_names

        site_names(real, config.data)  # exit 2 before minutes of work, not after
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
        try:
            audit = _membership_audit(config, syn, judge, nets, device)
        except NoUsableInputError as exc:
            if _mia_asked(config):
                raise
            # the always-on set-distance attack does not fail a plain `score DATA SYN`: it says why it is absent
            log.warning("membership audit skipped: %s", exc)
            result["syn"]["privacy"]["mia_skipped"] = exc.message
        else:
            result["syn"]["privacy"].update(mia=audit["mia"], mia_game=audit["game"],
                                            mia_exchangeable=audit["exchangeability"])
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


def _ci(block: dict, key: str) -> str:
    value, ci = block.get(key), block.get(f"{key}_ci")
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _render_mia(syn: dict, console: Any) -> None:
    from rich.table import Table

    p = syn["privacy"]
    if "mia" not in p:
        return
    game = p["mia_game"]
    table = Table(title=(f"membership inference: {game['members']} members (train) vs {game['nonmembers']} "
                         f"non-members ({'+'.join(game['nonmember_splits'])}), unit = {game['unit']}"))
    for col in ("attack", "artefact", "AUC [95% CI]", "TPR at 1% FPR [CI]", "TPR at 0.1% FPR", "advantage", "s"):
        table.add_column(col)
    for attack, per in p["mia"].items():
        for artefact, block in per.items():
            name = attack + (f" ({block['space']})" if block.get("space") else "")
            table.add_row(name, artefact, _ci(block, "auc"), _ci(block, "tpr_at_1pct_fpr"),
                          "-" if block.get("tpr_at_0.1pct_fpr") is None else f"{block['tpr_at_0.1pct_fpr']:.3f}",
                          f"{block['advantage']:.3f}", f"{block.get('seconds', 0):.1f}")
    console.print(table)
    verdict = p["mia_exchangeable"]
    if not verdict["exchangeable"]:
        console.print(f"splits not exchangeable: {verdict['reason']}", markup=False)
    console.print("AUC 0.5 = members and non-members look alike; read TPR at low FPR for the exposed few. "
                  "This report describes real patients: keep it with the real data, do not ship it with the set.",
                  markup=False)
    if syn.get("dp"):
        dp = syn["dp"]
        console.print(f"differential privacy: ({dp['epsilon']}, {dp['delta']})-DP per {dp['unit']}, epsilon spent "
                      f"{dp['epsilon_spent']}, noise multiplier {dp['noise_multiplier']:.3f}, {dp['accountant']}",
                      markup=False)


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
    if result.get("ipc") or not result.get("syn"):
        _render_before(result, console)
    if result.get("syn"):
        _render_after(result["syn"], console)
        _render_mia(result["syn"], console)
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
