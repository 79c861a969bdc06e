"""``score --per-site``: the indicator and the privacy audit of each site of a multi-site real file.

A real file that holds several sites (a ``merge`` of real sets, or an ingest with a CSV site
column) is scored as a whole as always; ``--per-site`` adds, for every recorded site (meta/site),
the study's indicator on that site's own train and test images (random-subset accuracy per IPC
relative to the site's full-data accuracy, evaluate's cached baselines keyed by the site) and,
with a distilled set, the privacy audit of every synthetic image against that site's real train
images only (which site's patients a near-copy would expose).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from medcondense import store
from medcondense.errors import ConfigError
from medcondense.evaluate.data import RealData

log = logging.getLogger(__name__)


def site_names(real: store.ImageSet, path: str) -> list[str]:
    """The recorded sites, in order of first appearance; ConfigError when there are none."""
    column = real.meta.get("site")
    names = [] if column is None else list(dict.fromkeys(str(s) for s in column if str(s)))
    if not names:
        raise ConfigError("--per-site: the file records no site for its images (meta/site)", path=path)
    return names


def site_judge(judge: RealData, name: str) -> RealData | None:
    """``judge`` restricted to one site's train and test images (None if it lacks either); its
    content hash carries the site so the baseline cache keeps sites apart."""
    real = judge.image_set
    site = real.meta["site"].astype(str) == name
    train = site[real.split == store.SPLIT_TRAIN]
    test = site[real.split == store.SPLIT_TEST]
    if not train.any() or not test.any():
        return None
    return dataclasses.replace(
        judge, content_hash=f"{judge.content_hash}#site={name}",
        train_x=judge.train_x[np.flatnonzero(train)], train_y=judge.train_y[train],
        test_x=judge.test_x[np.flatnonzero(test)], test_y=judge.test_y[test],
    )


def per_site_report(config: Any, judge: RealData, syn: store.ImageSet | None, syn_emb: list | None,
                    train_emb: list, device: Any) -> dict[str, Any]:
    """``{site: {n_train, n_test, full_data, ipc: [...], privacy}}`` (see the module docstring)."""
    from medcondense.evaluate.baselines import real_baselines
    from medcondense.score import privacy

    real = judge.image_set
    names = site_names(real, judge.path)  # first: a file without meta/site is exit 2, not a KeyError
    train_mask = real.split == store.SPLIT_TRAIN
    site_of = real.meta["site"].astype(str)
    out: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {"n_train": int((train_mask & (site_of == name)).sum()),
                                 "n_test": int(((real.split == store.SPLIT_TEST) & (site_of == name)).sum())}
        sub = site_judge(judge, name)
        if sub is None:
            entry["note"] = "the site lacks train or test images: no indicator"
        elif config.ipc:
            full, randoms = real_baselines(sub, ipcs=config.ipc, models=config.repeats, epochs=config.epochs,
                                           full_steps=config.full_steps, device=device, seed=config.seed)
            full_acc = full["accuracy"]["mean"]
            entry["full_data"] = {"accuracy": full_acc, "std": full["accuracy"]["std"], "epochs": full["epochs"],
                                  "n_train": full["train_images"], "cached": full.get("cached", False)}
            entry["ipc"] = [{"ipc": ipc, "random_accuracy": {"mean": r["accuracy"]["mean"], "std": r["accuracy"]["std"]},
                             "random_rel": round(r["accuracy"]["mean"] / full_acc, 4) if full_acc else None}
                            for ipc, r in randoms.items()]
        if syn is not None and syn_emb is not None:
            in_train = site_of[train_mask] == name  # rows of the train split that belong to the site
            rows = np.flatnonzero(in_train)
            settings = privacy.AuditSettings(config.ssim_threshold, config.cosine_threshold, config.ssim_topk)
            report = privacy.audit(syn.images, syn.labels, syn_emb, real.images[np.flatnonzero(train_mask)[rows]],
                                   np.flatnonzero(train_mask)[rows], [e[torch_index(rows, e)] for e in train_emb],
                                   real.class_names, settings, config.seed)
            entry["privacy"] = privacy.strip_internal(report)
        out[name] = entry
    return out


def torch_index(rows: np.ndarray, like: Any) -> Any:
    """``rows`` as an index tensor on the device of ``like``."""
    import torch

    return torch.as_tensor(rows, dtype=torch.long, device=like.device)
