"""Cross-site evaluation: every net trained on an input is tested on every site's test split.

Two ways to name the sites:

* ``--real A.h5 --real B.h5 ...`` (repeatable): each real file is a site, named by the one site
  it records (``meta/site``), else by its file name without ``.h5``;
* ``--real merged.h5 --per-site``: one real file that holds several sites (a ``merge`` of real
  sets, or an ingest with a CSV site column); each recorded site is a site.

Standardisation: nets are trained once per input. The input *and every site's test images* are
standardised with the input's own recorded train statistics (``normalization.train_mean/std``:
its source site's after a distill, pooled after a merge), so a net sees its test images as it saw
its training images. A site's baselines train on that site's own train split, standardised with
the site's file's statistics, and are tested on every site the same way.

Report (what :func:`run_cross_site` adds to evaluate's layout; docs/evaluate.md):

* ``real`` stays the first site's file block; ``sites`` lists every site
  ``{name, file, content_hash, train_images, test_images}``;
* ``results[i].metrics`` are pooled (all sites' test images together);
  ``results[i].per_site[<site>] = {metrics, baselines, recovery}`` with that site's own random
  and full baselines (trained on its train split, tested on its test split) and recovery =
  input / that site's full baseline; ``results[i].mean_of_sites`` = the mean over sites of each
  scalar metric's mean and of the recoveries; ``results[i].train_sites`` counts the input's
  training images per site (from its ``meta/site``), or is empty when it records none;
* ``site_baselines[<train site>] = {full: {<test site>: metrics}, random: {<ipc>: {<test site>:
  metrics}}}``: each site's baselines tested at every site.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medcondense import metrics, store
from medcondense.errors import ConfigError, DataMismatchError
from medcondense.evaluate.baselines import BaselineCache, full_baseline_epochs, random_subset
from medcondense.evaluate.data import InputSet, check_matches_real, learned_lr_of
from medcondense.evaluate.protocol import Plan, plan_for_input, train_net
from medcondense.train import predict_proba, standardize

log = logging.getLogger(__name__)


@dataclass
class Site:
    """One site's real data: its train split (for its baselines) and its test split (the judge)."""

    name: str
    file: str
    content_hash: str
    image_set: store.ImageSet  # the whole file it comes from (several sites share it with --per-site)
    train: np.ndarray  # boolean masks over image_set
    test: np.ndarray

    @property
    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        return self.image_set.normalization_stats()

    def test_x(self, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
        return standardize(self.image_set.images[self.test], mean, std)

    @property
    def test_y(self) -> np.ndarray:
        return self.image_set.labels[self.test]

    @property
    def train_y(self) -> np.ndarray:
        return self.image_set.labels[self.train]

    def block(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "content_hash": self.content_hash,
                "train_images": int(self.train.sum()), "test_images": int(self.test.sum())}


def recorded_sites(image_set: store.ImageSet) -> list[str]:
    """The distinct non-empty site names of a file's images, in order of first appearance."""
    sites = image_set.meta.get("site")
    return [] if sites is None else list(dict.fromkeys(str(s) for s in sites if str(s)))


def _read_real(path: str) -> store.ImageSet:
    image_set = store.read(path)
    if image_set.kind != "real":
        raise DataMismatchError(f"is a {image_set.kind} set; --real needs real data sets (kind real)", path=path)
    return image_set


def load_sites(reals: list[str], per_site: bool) -> list[Site]:
    """The sites of a cross-site run (see the module docstring); errors name the file and why."""
    sites: list[Site] = []
    if per_site:
        if len(reals) != 1:
            raise ConfigError(f"--per-site reads the sites of one --real file; {len(reals)} were given "
                              "(give several --real files without --per-site instead)")
        path = reals[0]
        image_set = _read_real(path)
        names = recorded_sites(image_set)
        if not names:
            raise ConfigError("--per-site: the file records no site for its images (meta/site)", path=path)
        digest = image_set.attrs.get("content_hash") or store.content_hash(image_set)
        site_of = image_set.meta["site"].astype(str)
        for name in names:
            mine = site_of == name
            sites.append(Site(name, path, digest, image_set, mine & (image_set.split == store.SPLIT_TRAIN),
                              mine & (image_set.split == store.SPLIT_TEST)))
    else:
        for path in reals:
            image_set = _read_real(path)
            names = recorded_sites(image_set)
            name = names[0] if len(names) == 1 else Path(path).name.removesuffix(".h5")
            if name in {s.name for s in sites}:
                name = f"{name}#{len(sites) + 1}"
            sites.append(Site(name, path, image_set.attrs.get("content_hash") or store.content_hash(image_set),
                              image_set, image_set.split == store.SPLIT_TRAIN, image_set.split == store.SPLIT_TEST))
    for site in sites:
        if not site.test.any():
            raise DataMismatchError(f"site {site.name!r} has no test images", path=site.file)
        if not site.train.any():
            raise DataMismatchError(f"site {site.name!r} has no train images (needed for its baselines)", path=site.file)
        if site is not sites[0]:
            check_matches_real(site.image_set, sites[0].image_set, site.file)
    return sites


@dataclass(kw_only=True)
class CrossInput(InputSet):
    """One set to judge at every site, standardised with its own recorded train statistics
    (an :class:`InputSet` plus those statistics and where its training images came from)."""

    mean: np.ndarray
    std: np.ndarray
    train_sites: dict[str, int]


def load_cross_input(path: str, sites: list[Site], allow_mismatch: bool = False) -> CrossInput:
    """Read a set to judge (a factorised one decoded); a real file contributes its train split."""
    from medcondense.factorised import decoded

    image_set = decoded(store.read(path))
    check_matches_real(image_set, sites[0].image_set, path, real_path=sites[0].file, allow_mismatch=allow_mismatch)
    if image_set.kind in store.REAL_KINDS and image_set.kind != "subset":
        image_set = image_set.part(store.SPLIT_TRAIN)
    if image_set.n == 0:
        raise DataMismatchError("has no images to train on", path=path)
    mean, std = image_set.normalization_stats()
    site_column = image_set.meta.get("site")
    train_sites = {} if site_column is None else {
        name: int((site_column.astype(str) == name).sum()) for name in dict.fromkeys(str(s) for s in site_column) if name}
    ipc = image_set.attrs.get("ipc")
    return CrossInput(
        path=path, kind=image_set.kind, method=str(image_set.attrs.get("method") or image_set.kind),
        ipc=int(ipc) if ipc else int(np.bincount(image_set.labels).max()),
        content_hash=image_set.attrs.get("content_hash") or store.content_hash(image_set),
        train_x=standardize(image_set.images, mean, std), train_y=image_set.labels, mean=mean, std=std,
        train_sites=train_sites, learned_lr=learned_lr_of(image_set.attrs.get("learned_lr")),
    )


# ----------------------------------------------------------------------------- train once, test everywhere


def train_and_test_at_sites(
    plan: Plan, train_x: torch.Tensor, train_y: np.ndarray, sites: list[Site], mean: np.ndarray, std: np.ndarray,
    *, num_classes: int, settings=None, seeds: list[int] | None = None, subsets: list[np.ndarray] | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train one net per seed (``seed + k``), test each on every site's test split and on all of
    them pooled; returns ``{site: summary, ..., "pooled": summary}`` (:func:`metrics.summarize`).

    ``subsets`` gives each net its own rows of ``train_x`` (the random baseline)."""
    settings = settings or plan.settings
    seeds = seeds if seeds is not None else [plan.seed + k for k in range(plan.models)]
    tests = {s.name: (s.test_x(mean, std).to(plan.device), s.test_y) for s in sites}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in [*tests, "pooled"]}
    x_all = train_x.to(plan.device)
    y_all = torch.as_tensor(train_y, dtype=torch.long).to(plan.device)
    for k, seed in enumerate(seeds):
        rows = None if subsets is None else torch.as_tensor(subsets[k], dtype=torch.long, device=plan.device)
        x, y = (x_all, y_all) if rows is None else (x_all[rows], y_all[rows])
        net = train_net(x, y, arch=plan.arch, num_classes=num_classes, settings=settings, augment=plan.augment, seed=seed)
        probas, labels = [], []
        for name, (test_x, test_y) in tests.items():
            proba = predict_proba(net, test_x)
            runs[name].append(metrics.classification_metrics(test_y, proba, num_classes))
            probas.append(proba)
            labels.append(test_y)
        runs["pooled"].append(metrics.classification_metrics(np.concatenate(labels), np.concatenate(probas), num_classes))
        if tick is not None:
            tick()
    train_images = int(len(train_y) if subsets is None else len(subsets[0]))
    return {name: {**metrics.summarize(r), "models": len(seeds), "epochs": settings.epochs, "train_images": train_images}
            for name, r in runs.items()}


def _site_baseline_params(plan: Plan, site: Site, sites: list[Site], name: str, ipc: int | None) -> dict[str, Any]:
    s = plan.settings
    return {
        "real": site.content_hash, "cross_site": [[t.name, t.content_hash] for t in sites], "train_site": site.name,
        "baseline": name, "ipc": ipc, "arch": plan.arch, "epochs": s.epochs, "models": plan.models, "seed": plan.seed,
        "train_aug": plan.train_aug, "lr": s.lr, "batch_size": s.batch_size,
        "full_steps": plan.full_steps if name == "full" else None,
    }


def site_baselines(plan: Plan, sites: list[Site], ipcs: list[int], which: list[str], num_classes: int,
                   tick: Callable[[], None]) -> dict[str, dict[str, Any]]:
    """Each site's random (per IPC) and full baselines, trained on its own train split and tested
    at every site; cached in ``<site file>.baselines.json``. ``{train site: {full: {test site:
    summary}, random: {ipc: {test site: summary}}}}``."""
    out: dict[str, dict[str, Any]] = {}
    for site in sites:
        mean, std = site.mean_std
        train_x = standardize(site.image_set.images[site.train], mean, std)
        train_y = site.train_y
        cache = BaselineCache(site.file)
        entry: dict[str, Any] = {}
        if "full" in which:
            epochs = full_baseline_epochs(len(train_y), plan.settings.epochs, plan.settings.batch_size, plan.full_steps)
            params = _site_baseline_params(plan, site, sites, "full", None)
            entry["full"] = _cached(cache, params, lambda: train_and_test_at_sites(
                plan, train_x, train_y, sites, mean, std, num_classes=num_classes,
                settings=replace(plan.settings, epochs=epochs), tick=tick))
        if "random" in which:
            entry["random"] = {}
            for ipc in ipcs:
                params = _site_baseline_params(plan, site, sites, "random", ipc)
                subsets = [random_subset(train_y, ipc, plan.seed + k) for k in range(plan.models)]
                entry["random"][ipc] = _cached(cache, params, lambda subsets=subsets: train_and_test_at_sites(
                    plan, train_x, train_y, sites, mean, std, num_classes=num_classes, subsets=subsets, tick=tick))
        out[site.name] = entry
    return out


def _cached(cache: BaselineCache, params: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    hit = cache.get(params)
    if hit is not None:
        log.info("site baseline %s of %s (ipc %s): from the cache %s", params["baseline"], params["train_site"],
                 params["ipc"], cache.path)
        return {name: {**block, "cached": True} for name, block in hit.items()}
    result = compute()
    cache.put(params, result)
    return {name: {**block, "cached": False} for name, block in result.items()}


# ----------------------------------------------------------------------------- report blocks


def _metrics_block(summary: dict[str, Any]) -> dict[str, Any]:
    return {name: summary[name] for name in (*metrics.SCALAR_METRICS, "per_class_recall")}


def _baseline_block(summary: dict[str, Any], **extra: Any) -> dict[str, Any]:
    keep = {k: summary[k] for k in ("epochs", "train_images", "models", "cached") if k in summary}
    return {"metrics": _metrics_block(summary), **extra, **keep}


def _recovery(result: dict[str, Any], full: dict[str, Any] | None) -> dict[str, Any] | None:
    if full is None:
        return None
    return {name: metrics.ratio(result[name]["mean"], full[name]["mean"]) for name in metrics.SCALAR_METRICS}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def result_block(item: CrossInput, summaries: dict[str, dict[str, Any]], sites: list[Site],
                 baselines: dict[str, dict[str, Any]], protocol: dict[str, Any]) -> dict[str, Any]:
    """One ``results[i]`` of a cross-site report."""
    per_site: dict[str, Any] = {}
    for site in sites:
        own = baselines.get(site.name, {})
        blocks = {}
        random = own.get("random", {}).get(item.ipc)
        if random is not None:
            blocks["random"] = _baseline_block(random[site.name], ipc=item.ipc)
        full = own.get("full")
        if full is not None:
            blocks["full"] = _baseline_block(full[site.name])
        summary = summaries[site.name]
        per_site[site.name] = {
            "metrics": _metrics_block(summary), "baselines": blocks,
            "recovery": _recovery(summary, full[site.name] if full is not None else None),
            "test_images": int(site.test.sum()),
        }
    mean_of_sites: dict[str, Any] = {
        name: _mean([per_site[s.name]["metrics"][name]["mean"] for s in sites]) for name in metrics.SCALAR_METRICS
    }
    mean_of_sites["recovery"] = {
        name: _mean([(per_site[s.name]["recovery"] or {}).get(name) for s in sites]) for name in metrics.SCALAR_METRICS
    }
    return {
        "file": item.path, "kind": item.kind, "method": item.method, "ipc": item.ipc,
        "train_images": int(len(item.train_y)), "content_hash": item.content_hash, "train_sites": item.train_sites,
        "metrics": _metrics_block(summaries["pooled"]), "baselines": {}, "recovery": None,
        "per_site": per_site, "mean_of_sites": mean_of_sites, "protocol": protocol,
    }


def site_baselines_block(baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``site_baselines`` of the report: every site's baselines tested at every site."""
    out: dict[str, Any] = {}
    for train_site, entry in baselines.items():
        block: dict[str, Any] = {}
        if "full" in entry:
            block["full"] = {test: _metrics_block(s) for test, s in entry["full"].items()}
        if "random" in entry:
            block["random"] = {str(ipc): {test: _metrics_block(s) for test, s in tested.items()}
                               for ipc, tested in entry["random"].items()}
        out[train_site] = block
    return out


def full_budget(plan: Plan, train_images: int) -> dict[str, int]:
    """Epochs and SGD steps of a site's full baseline (evaluate's step budget)."""
    epochs = full_baseline_epochs(train_images, plan.settings.epochs, plan.settings.batch_size, plan.full_steps)
    return {"epochs": epochs, "steps": epochs * max(1, math.ceil(train_images / plan.settings.batch_size))}


# ----------------------------------------------------------------------------- the stage, cross-site


def real_paths(real: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``--real`` as a list (YAML gives a string or a list; the CLI a list)."""
    if real is None:
        return []
    if isinstance(real, (list, tuple)):
        return [str(r) for r in real]
    return [str(real)]


def check_cross_site(config: Any, reals: list[str]) -> None:
    """Options that do not go together with cross-site evaluation."""
    if config.test_site is not None:
        raise ConfigError("--test-site picks one site of one --real file; with several --real files or --per-site "
                          "every site is tested already (see results[].per_site)")
    if not reals:
        raise ConfigError("give the real data sets to test on with --real")


def run_cross_site(config: Any, reals: list[str], started: float) -> dict[str, Any]:
    """``evaluate`` with several sites: the report described in the module docstring."""
    from types import SimpleNamespace

    from medcondense import runkey
    from medcondense.atomic import write_json
    from medcondense.config import config_to_dict
    from medcondense.console import progress
    from medcondense.device import describe_device
    from medcondense.evaluate.protocol import make_plan
    from medcondense.evaluate.report import write_plot
    from medcondense.provenance import make_provenance

    check_cross_site(config, reals)
    sites = load_sites(reals, config.per_site)
    inputs = [load_cross_input(p, sites, config.allow_mismatch) for p in config.inputs]
    options = {k: v for k, v in config_to_dict(config).items()
               if k not in ("inputs", "real", "output", "plot", "overwrite", "device")}
    run_key = runkey.run_key({"sites": [[s.name, s.content_hash] for s in sites],
                              "inputs": [i.content_hash for i in inputs], "options": options})
    if config.output:
        runkey.skip_if_done(config.output, run_key, config.overwrite, runkey.json_record)
    plan = make_plan(config, SimpleNamespace(image_set=sites[0].image_set))
    num_classes = len(sites[0].image_set.class_names)
    ipcs = sorted({i.ipc for i in inputs})
    per_site_nets = plan.models * len(sites) * (("full" in config.baselines) + len(ipcs) * ("random" in config.baselines))
    log.info("cross-site evaluation: %d set(s) x %d %s net(s), tested at %d site(s) (%s)", len(inputs), plan.models,
             plan.arch, len(sites), ", ".join(s.name for s in sites))
    with progress("evaluate", total=plan.models * len(inputs) + per_site_nets) as bar:
        baselines = site_baselines(plan, sites, ipcs, list(config.baselines), num_classes, bar.advance)
        results = []
        for item in inputs:
            bar.update(status=Path(item.path).name)
            laterality = bool(sites[0].image_set.attrs.get("laterality", True))
            own_plan, protocol = plan_for_input(plan, config, item.learned_lr, laterality)
            summaries = train_and_test_at_sites(own_plan, item.train_x, item.train_y, sites, item.mean, item.std,
                                                num_classes=num_classes, tick=bar.advance)
            results.append(result_block(item, summaries, sites, baselines, protocol))
    first = sites[0]
    report: dict[str, Any] = {
        "real": {"file": first.file, "content_hash": first.content_hash, "class_names": list(first.image_set.class_names),
                 "test_images": int(first.test.sum()), "test_site": None},
        "sites": [s.block() for s in sites],
        "protocol": {
            "arch": plan.arch, "models": plan.models, "epochs": plan.settings.epochs, "train_aug": plan.train_aug,
            "aug_ops": plan.aug_ops, "lr": plan.settings.lr, "momentum": plan.settings.momentum,
            "weight_decay": plan.settings.weight_decay, "batch_size": plan.settings.batch_size, "seed": plan.seed,
            "device": describe_device(plan.device), "standardisation": "each input's own recorded train statistics",
            "full_baseline": {"step_budget": plan.full_steps,
                              "per_site": {s.name: full_budget(plan, int(s.train.sum())) for s in sites}},
        },
        "results": results,
        "site_baselines": site_baselines_block(baselines),
        "output": config.output,
        "plot": config.plot or (str(Path(config.output).with_suffix(".png")) if config.output and len(inputs) > 1 else None),
        "run_key": run_key,
    }
    report["provenance"] = make_provenance(
        stage="evaluate", config=config_to_dict(config), paths=[*config.inputs, *reals],
        input_hash=run_key, seed=config.seed, device=describe_device(plan.device), started=started,
    )
    if report["plot"]:
        write_plot(report, report["plot"])
    if config.output:
        write_json(config.output, report)
    return report
