"""Membership inference: the attacks, and the statistics that turn their scores into a verdict.

The game (docs/score.md): *members* are the real train images a set was distilled from;
*non-members* are real images of the same data set that the distillation never saw (the val and/or
test split, split by patient at ingest). An attacker who holds the released set and one candidate
image says "member" when the candidate's score is high. If the set leaks nothing, members and
non-members score alike and the ROC AUC is 0.5.

Scores are per image; the unit of the game is the patient when the data set records one (a
patient's score is the maximum over their images: an attacker needs one hit) and the image
otherwise (:func:`unit_scores`).

Attack scores (higher = "more likely a member"):

* :func:`set_distance_scores`: the largest centred cosine between a candidate and the synthetic
  images of its class (no training at all: what a curious recipient can do in a minute);
* :func:`loss_scores`: the logit-scaled confidence ``log(p_y / (1 - p_y))`` of models trained on
  the released set, averaged over the models (Yeom et al. 2018; Carlini et al. 2022's scaling);
* :func:`lira_scores`: online LiRA with a global variance (Carlini et al. 2022, "Membership
  Inference Attacks From First Principles"): the same confidence, compared with what shadow
  models that did and did not see the candidate give it.

Statistics: :func:`roc_auc` (ties count one half), :func:`tpr_at_fpr` (a threshold that keeps the
false-positive rate at or below the target, ties never split), :func:`advantage`
(``max TPR - FPR``), and :func:`summarize`, which adds percentile-bootstrap 95 % intervals by
resampling member and non-member units independently.

This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: the false-positive rates TPR is reported at
FPR_LOW = 0.01
FPR_VERY_LOW = 0.001
#: TPR at 0.1 % FPR only means something with at least this many non-member units
MIN_UNITS_VERY_LOW = 1000
#: below this many non-member units the audit refuses to run (exit 3)
MIN_NONMEMBER_UNITS = 20
BOOTSTRAP_SAMPLES = 1000


# --------------------------------------------------------------------------- statistics


def _as_scores(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError("membership scores must be finite")
    return arr


def roc_auc(members: Any, nonmembers: Any) -> float:
    """P(member score > non-member score) + 0.5 P(equal): the Mann-Whitney AUC."""
    m, n = _as_scores(members), _as_scores(nonmembers)
    if not m.size or not n.size:
        raise ValueError("AUC needs at least one member and one non-member")
    return float(_auc_rows(m[None], n[None])[0])


def _auc_rows(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """AUC of each row pair [B, m] x [B, n] via average ranks (ties share their rank)."""
    from scipy.stats import rankdata

    m = members.shape[1]
    ranks = rankdata(np.concatenate([members, nonmembers], axis=1), axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * nonmembers.shape[1])


def tpr_at_fpr(members: Any, nonmembers: Any, fpr: float) -> float:
    """The largest TPR of a threshold rule "member if score > t" whose FPR is at most ``fpr``.

    With ``k = floor(fpr * n)`` false positives allowed, the threshold is the ``k+1``-th largest
    non-member score: only members strictly above it count. Tied non-members are never split, so
    the FPR actually achieved can be below ``fpr`` (conservative for the attacker).
    """
    m, n = _as_scores(members), _as_scores(nonmembers)
    return float(_tpr_rows(m[None], n[None], fpr)[0])


def _tpr_rows(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> np.ndarray:
    n = nonmembers.shape[1]
    allowed = int(math.floor(fpr * n + 1e-9))
    if allowed >= n:
        return np.ones(members.shape[0])
    threshold = -np.sort(-nonmembers, axis=1)[:, allowed]  # the (allowed+1)-th largest
    return (members > threshold[:, None]).mean(axis=1)


def advantage(members: Any, nonmembers: Any) -> float:
    """Membership advantage ``max_t TPR(t) - FPR(t)`` (Yeom et al. 2018); 0 = no better than chance."""
    m, n = _as_scores(members), _as_scores(nonmembers)
    thresholds = np.unique(np.concatenate([m, n]))
    # rule "score >= t" for every observed t, plus "nobody" (TPR = FPR = 0)
    tpr = (m[None, :] >= thresholds[:, None]).mean(axis=1)
    fpr = (n[None, :] >= thresholds[:, None]).mean(axis=1)
    return float(max(0.0, (tpr - fpr).max()))


def bootstrap_ci(members: np.ndarray, nonmembers: np.ndarray, samples: int, seed: int,
                 fprs: tuple[float, ...] = (FPR_LOW,)) -> dict[str, list[float]]:
    """Percentile 95 % intervals of AUC and TPR at each FPR; units are resampled within each side."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[float]]] = {"auc": [], **{f"tpr@{f}": [] for f in fprs}}
    chunk = max(1, min(samples, 2_000_000 // max(1, members.size + nonmembers.size)))
    for start in range(0, samples, chunk):
        b = min(chunk, samples - start)
        mb = members[rng.integers(0, members.size, size=(b, members.size))]
        nb = nonmembers[rng.integers(0, nonmembers.size, size=(b, nonmembers.size))]
        out["auc"].append(_auc_rows(mb, nb))
        for f in fprs:
            out[f"tpr@{f}"].append(_tpr_rows(mb, nb, f))
    return {key: [round(float(np.percentile(np.concatenate(v), q)), 4) for q in (2.5, 97.5)] for key, v in out.items()}


def summarize(members: Any, nonmembers: Any, *, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
              seconds: float | None = None) -> dict[str, Any]:
    """The report block of one attack on one artefact (unit scores of both sides).

    Keys: ``auc``, ``auc_ci``, ``tpr_at_1pct_fpr``, ``tpr_at_1pct_fpr_ci``, ``tpr_at_0.1pct_fpr``
    (null with ``tpr_at_0.1pct_fpr_note`` below :data:`MIN_UNITS_VERY_LOW` non-member units),
    ``advantage``, ``members``, ``nonmembers``, ``fpr_floor`` (1 / non-member units: no FPR below
    it can be measured), ``seconds``.
    """
    m, n = _as_scores(members), _as_scores(nonmembers)
    very_low = n.size >= MIN_UNITS_VERY_LOW
    fprs = (FPR_LOW, FPR_VERY_LOW) if very_low else (FPR_LOW,)
    ci = bootstrap_ci(m, n, samples, seed, fprs)
    block: dict[str, Any] = {
        "auc": round(roc_auc(m, n), 4),
        "auc_ci": ci["auc"],
        "tpr_at_1pct_fpr": round(tpr_at_fpr(m, n, FPR_LOW), 4),
        "tpr_at_1pct_fpr_ci": ci[f"tpr@{FPR_LOW}"],
        "tpr_at_0.1pct_fpr": None,
        "advantage": round(advantage(m, n), 4),
        "members": int(m.size),
        "nonmembers": int(n.size),
        "fpr_floor": round(1.0 / n.size, 6),
    }
    if very_low:
        block["tpr_at_0.1pct_fpr"] = round(tpr_at_fpr(m, n, FPR_VERY_LOW), 4)
        block["tpr_at_0.1pct_fpr_ci"] = ci[f"tpr@{FPR_VERY_LOW}"]
    else:
        block["tpr_at_0.1pct_fpr_note"] = (f"needs >= {MIN_UNITS_VERY_LOW} non-member units to be measured "
                                           f"(have {n.size}; the lowest measurable FPR is 1/{n.size})")
    if seconds is not None:
        block["seconds"] = round(seconds, 3)
    return block


def ci_holds_half(block: dict[str, Any]) -> bool:
    """True when the AUC interval of ``block`` contains 0.5 (no detectable membership signal)."""
    lo, hi = block["auc_ci"]
    return lo <= 0.5 <= hi


def exchangeability(noise_blocks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The "splits not exchangeable" rule from the noise-set floor of every attack.

    A set of pure noise carries no information about any real image, so an attack that still tells
    members from non-members with it measures a difference between the splits (another
    hemisphere, another scanner), not a leak. Any noise AUC interval excluding 0.5 marks the
    audit as not exchangeable; ``score`` then gates with exit 3 instead of judging the set.
    """
    bad = {name: block["auc_ci"] for name, block in noise_blocks.items() if not ci_holds_half(block)}
    if not bad:
        return {"exchangeable": True}
    return {"exchangeable": False, "note": "splits not exchangeable",
            "reason": "with a pure-noise set the attack still separates the splits: " +
                      ", ".join(f"{k} AUC CI [{v[0]:.3f}, {v[1]:.3f}]" for k, v in sorted(bad.items()))}


# --------------------------------------------------------------------------- units


def unit_scores(scores: Any, units: Any | None) -> np.ndarray:
    """One score per unit: the maximum over the unit's images (``units=None``: one unit per image).

    Units are returned in order of first appearance of their id.
    """
    s = _as_scores(scores)
    if units is None:
        return s
    ids = np.asarray(units)
    if ids.shape[0] != s.size:
        raise ValueError(f"{s.size} scores but {ids.shape[0]} unit ids")
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    best = np.full(first.size, -np.inf)
    np.maximum.at(best, inverse.reshape(-1), s)
    return best[np.argsort(first)]


# --------------------------------------------------------------------------- attacks


def set_distance_scores(candidates, candidate_labels, synthetic, synthetic_labels, centre):
    """Max cosine (after subtracting ``centre``) between each candidate and the synthetic images of its class.

    ``candidates`` [N, D] and ``synthetic`` [M, D] are flattened images or embeddings (torch
    tensors); ``centre`` [D] is the real train mean in the same space (uncentred ReLU features and
    positive pixels make every cosine high). A candidate of a class the set lacks scores -1.
    Returns a numpy array [N].
    """
    import torch

    cand = torch.nn.functional.normalize(candidates.float() - centre, dim=1)
    syn = torch.nn.functional.normalize(synthetic.float() - centre, dim=1)
    out = torch.full((cand.shape[0],), -1.0)
    for k in torch.unique(torch.as_tensor(candidate_labels)).tolist():
        rows = torch.as_tensor(candidate_labels) == k
        cols = torch.as_tensor(synthetic_labels) == k
        if rows.any() and cols.any():
            out[rows.cpu()] = (cand[rows.to(cand.device)] @ syn[cols.to(syn.device)].T).max(dim=1).values.cpu()
    return out.numpy().astype(np.float64)


def logit_confidence(logits, labels):
    """``log p_y - log(1 - p_y)`` per row, computed stably from logits [N, K] (torch)."""
    import torch

    logits = logits.double()
    labels = torch.as_tensor(labels, device=logits.device).long()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).cpu().numpy()


def model_confidence(net, images, labels, batch_size: int = 512) -> np.ndarray:
    """:func:`logit_confidence` of ``net`` (eval mode, no gradients) on standardized ``images``."""
    import torch

    net.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            parts.append(net(images[i : i + batch_size]).float())
    logits = torch.cat(parts) if parts else images.new_zeros((0, 1))
    return logit_confidence(logits, labels)


def loss_scores(confidences: list[np.ndarray]) -> np.ndarray:
    """The loss attack: mean logit-scaled confidence over the K target models."""
    return np.mean(np.stack([np.asarray(c, dtype=np.float64) for c in confidences]), axis=0)


def lira_scores(target: np.ndarray, shadow: np.ndarray, shadow_in: np.ndarray) -> np.ndarray:
    """Online LiRA with a global variance.

    ``target`` [N]: the candidates' confidence under the attacked models; ``shadow`` [S, N]: their
    confidence under S shadow models; ``shadow_in`` [S, N] (bool): whether shadow ``s`` was built
    with candidate ``n``. Per candidate, the means of its IN and OUT shadow confidences; one
    variance pooled over all candidates and both sides (robust with few shadows). The score is the
    log-likelihood ratio ``log N(target; mu_in, var) - log N(target; mu_out, var)``. A candidate
    never IN (or never OUT) falls back to the mean over all candidates of that side.
    """
    target = np.asarray(target, dtype=np.float64)
    shadow = np.asarray(shadow, dtype=np.float64)
    inside = np.asarray(shadow_in, dtype=bool)
    if shadow.shape != inside.shape or shadow.shape[1] != target.size:
        raise ValueError(f"shadow {shadow.shape}, shadow_in {inside.shape} and target {target.shape} do not fit")
    n_in, n_out = inside.sum(axis=0), (~inside).sum(axis=0)
    mu_in = np.where(n_in > 0, (shadow * inside).sum(axis=0) / np.maximum(n_in, 1), shadow[inside].mean() if inside.any() else 0.0)
    mu_out = np.where(n_out > 0, (shadow * ~inside).sum(axis=0) / np.maximum(n_out, 1),
                      shadow[~inside].mean() if (~inside).any() else 0.0)
    resid = np.where(inside, shadow - mu_in[None], shadow - mu_out[None])
    var = max(float(resid.var()), 1e-12)
    return ((target - mu_out) ** 2 - (target - mu_in) ** 2) / (2 * var)


def lira_splits(n: int, shadows: int, seed: int) -> np.ndarray:
    """[S, n] bool: each shadow's random half of the candidates; every candidate IN for exactly S/2.

    Column-balanced (Carlini et al.'s online setting): each candidate is in half the shadows.
    """
    if shadows < 4 or shadows % 2:
        raise ValueError(f"LiRA needs an even number of shadows >= 4, got {shadows}")
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((shadows, n)), axis=0)
    return order < shadows // 2
