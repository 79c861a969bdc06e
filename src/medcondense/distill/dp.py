"""Differentially private distribution matching: the statistics DP-DM releases, and their accounting.

DP-DM (``distill --method dm --dp-epsilon E --dp-delta D``; the NDPDC / DP-MERF family) matches
the synthetic images to a *released* statistic instead of to real batches. The release touches
the real images exactly once, here:

* **Queries.** ``T`` fixed random ConvNets with one augmentation draw each (:class:`QueryBank`),
  built from ``--seed`` alone (public: they depend on no data). Query ``t`` maps an image to its
  embedding, average-pooled to at most :data:`DP_GRID` x :data:`DP_GRID` and scaled to unit L2
  norm: a data-independent transform, applied the same way to the synthetic images.
* **Per-unit blocks.** A unit (a patient, or an image with ``--dp-unit image``) contributes the
  vector ``b_u[t, k] = sum over its class-k images of f_t(x) / (sqrt(T) * n_u)`` over all queries
  and classes: its per-class mean embeddings weighted by its class fractions. ``||b_u|| <= 1`` by
  construction; it is clipped to ``--dp-clip`` C all the same (C < 1 bites; the guarantee rests
  on the clip, not on the bound).
* **Class weights.** The second vector ``h_u = class histogram / n_u`` (L2 norm <= 1) gives the
  denominators: ``target[t, k] = sqrt(T) * S[t, k] / H[k]`` is a unit-weighted class mean.
* **Noise, once.** ``S = sum_u clip(b_u) + N(0, sigma^2 C^2)`` and ``H = sum_u h_u + N(0, sigma^2)``:
  two Gaussian mechanisms with sensitivity C and 1 under adding or removing one unit. ``sigma``
  comes from Opacus' accountant for the two releases composed
  (``get_noise_multiplier(target_epsilon=E, target_delta=D, sample_rate=1.0, steps=2)``). The noise
  is drawn from a generator seeded by ``secrets.randbits(128)``: never from ``--seed``, never
  recorded, so nobody can subtract it again. Only the noisy ``S`` and ``H`` are kept (and
  checkpointed); optimisation and ``--resume`` reuse them for any number of steps.

Everything after the release is post-processing of ``(S, H)`` and public seeds, so the synthetic
images are (E, D)-DP with respect to the units of the train split, provided the images start from
noise and the standardisation uses fixed constants (:data:`FIXED_MEAN`, :data:`FIXED_STD`); the
distill stage enforces both (docs/distill.md).

Opacus is an optional extra (``pip install 'medcondense[dp]'``); it is imported only here and only
when DP is asked for.
"""

from __future__ import annotations

import logging
import math
import secrets
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from medcondense.errors import ConfigError

log = logging.getLogger(__name__)

ACCOUNTANTS = ("rdp", "prv")
UNITS = ("patient", "image")
#: the two Gaussian releases (sums, class weights) composed by the accountant
RELEASES = 2
#: each query's feature map is average-pooled to at most this grid: the noise grows with the
#: released dimension (T x classes x channels x grid^2), the signal does not
DP_GRID = 2
#: fixed standardisation of windowed ([0, 1]) images: data-independent, unlike train mean/std
FIXED_MEAN = 0.5
FIXED_STD = 0.25
#: a noisy class weight below this is treated as this (a class with almost no data)
MIN_CLASS_WEIGHT = 1.0
#: every image's contribution is scaled by 1 - this (a public constant; :meth:`Statistics.targets`
#: undoes it). A one-image unit's block has norm exactly 1 in exact arithmetic, and float32
#: rounding put about 10 % of them a few 1e-7 above it: above a clip of 1, which sent every
#: ``--dp-unit image`` release through a second pass over all queries (twice the release time)
#: to clip by nothing. The margin keeps such blocks inside the clip without a data-dependent step.
ROUNDING_MARGIN = 1e-5
INSTALL_HINT = "pip install 'medcondense[dp]'  (installs Opacus, used for the privacy accounting)"


@dataclass
class DPSettings:
    """What the user asked for (``--dp-*``)."""

    epsilon: float
    delta: float
    clip: float = 1.0
    unit: str = "patient"
    queries: int = 50
    accountant: str = "rdp"


# --------------------------------------------------------------------------- accounting


def require_opacus() -> Any:
    """The opacus module, or a ConfigError (exit 2) naming the extra to install."""
    try:
        import opacus
    except ImportError:
        raise ConfigError("differential privacy needs Opacus, which is not installed", hint=INSTALL_HINT) from None
    return opacus


def noise_multiplier(epsilon: float, delta: float, accountant: str = "rdp") -> float:
    """sigma (noise std / sensitivity) of each of the :data:`RELEASES` Gaussian releases for (E, D)."""
    require_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": tighter bounds exist, ours holds
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0,
                                          steps=RELEASES, accountant=accountant))


def epsilon_spent(sigma: float, delta: float, accountant: str = "rdp") -> float:
    """The epsilon the accountant gives for the :data:`RELEASES` releases with noise ``sigma``."""
    require_opacus()
    from opacus.accountants import create_accountant

    acc = create_accountant(mechanism=accountant)
    acc.history = [(sigma, 1.0, RELEASES)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))


def opacus_version() -> str:
    return str(getattr(require_opacus(), "__version__", "unknown"))


def check_settings(settings: DPSettings, units: int) -> None:
    """ConfigError (exit 2) for DP settings that cannot give the promised guarantee."""
    # inf is accepted: the same code without noise (no guarantee; the benchmark's ablation row)
    if not (isinstance(settings.epsilon, (int, float)) and not math.isnan(settings.epsilon) and settings.epsilon > 0):
        raise ConfigError(f"--dp-epsilon {settings.epsilon!r}: expected a positive number")
    if not (isinstance(settings.delta, (int, float)) and 0 < settings.delta < 1):
        raise ConfigError(f"--dp-delta {settings.delta!r}: expected a number in (0, 1)")
    if units and settings.delta >= 1.0 / units:
        raise ConfigError(f"--dp-delta {settings.delta:g} is not below 1 / units (1/{units}): "
                          "a delta that large allows releasing one unit's data outright",
                          hint=f"use --dp-delta {10 ** math.floor(math.log10(0.1 / units)):g} or smaller")
    if not (isinstance(settings.clip, (int, float)) and settings.clip > 0):
        raise ConfigError(f"--dp-clip {settings.clip!r}: expected a positive number")
    if settings.unit not in UNITS:
        raise ConfigError(f"--dp-unit {settings.unit!r}: expected one of {', '.join(UNITS)}")
    if isinstance(settings.queries, bool) or not isinstance(settings.queries, int) or settings.queries < 1:
        raise ConfigError(f"--dp-queries {settings.queries!r}: expected a whole number >= 1")
    if settings.accountant not in ACCOUNTANTS:
        raise ConfigError(f"--dp-accountant {settings.accountant!r}: expected one of {', '.join(ACCOUNTANTS)}")


# --------------------------------------------------------------------------- queries


class QueryBank:
    """The ``T`` public queries: query ``t`` is a random network and one augmentation draw.

    Both come from ``seed`` and ``t`` alone (the network is built under a forked global RNG seeded
    with :func:`query_seed`; the augmentation from a generator seeded the same way), so the release
    and every later matching step see the same queries, on any device and after ``--resume``.
    """

    def __init__(self, count: int, seed: int, make_net: Callable[[], nn.Module],
                 sample_aug: Callable[[torch.Generator], Any] | None = None,
                 apply_aug: Callable[[torch.Tensor, Any], torch.Tensor] | None = None):
        self.count = count
        self.seed = seed
        self._make_net = make_net
        self._sample_aug = sample_aug
        self._apply_aug = apply_aug
        self._cache: dict[int, tuple[nn.Module, Any]] = {}

    def query(self, t: int) -> tuple[nn.Module, Any]:
        """Network (frozen) and augmentation parameters of query ``t``."""
        if t not in self._cache:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(query_seed(self.seed, t))
                net = self._make_net()
            for p in net.parameters():
                p.requires_grad_(False)
            params = None
            if self._sample_aug is not None:
                params = self._sample_aug(torch.Generator().manual_seed(query_seed(self.seed, t)))
            self._cache[t] = (net, params)
        return self._cache[t]

    def features(self, t: int, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm pooled embeddings [N, D] of standardized ``images`` under query ``t``.

        Differentiable in ``images`` (the synthetic side needs gradients); the real side calls it
        under ``torch.no_grad``.
        """
        net, params = self.query(t)
        x = images if params is None or self._apply_aug is None else self._apply_aug(images, params)
        fmap = net.features(x) if hasattr(net, "features") else net.embed(x)
        if fmap.dim() == 4 and fmap.shape[-1] > DP_GRID:
            fmap = nn.functional.adaptive_avg_pool2d(fmap, DP_GRID)
        flat = fmap.flatten(1).float()
        return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def query_seed(seed: int, t: int) -> int:
    """The seed of query ``t`` of a run seeded ``seed`` (distinct from the engine's seeds)."""
    return (int(seed) * 1_000_003 + 7_919 * (t + 1)) % (2**63 - 1)


# --------------------------------------------------------------------------- the release


@dataclass
class Statistics:
    """Summed unit blocks [T, K, D] and class weights [K], clean or noisy."""

    sums: torch.Tensor
    weights: torch.Tensor

    def targets(self) -> torch.Tensor:
        """Unit-weighted class means of the unit-norm features [T, K, D] (what DP-DM matches)."""
        count = self.sums.shape[0]
        scale = math.sqrt(count) / (1.0 - ROUNDING_MARGIN)
        return scale * self.sums / self.weights.clamp_min(MIN_CLASS_WEIGHT)[None, :, None]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums.detach().cpu(), "weights": self.weights.detach().cpu()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device: torch.device) -> "Statistics":
        return cls(sums=state["sums"].to(device), weights=state["weights"].to(device))


def unit_codes(units: Any | None, n: int) -> tuple[np.ndarray, int]:
    """Unit index per image (0..U-1) and U; ``None`` = one unit per image."""
    if units is None:
        return np.arange(n), n
    _, codes = np.unique(np.asarray(units), return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if n else 0


def clip_rows(blocks: torch.Tensor, clip: float) -> torch.Tensor:
    """Each row scaled to L2 norm at most ``clip`` (rows already inside stay as they are)."""
    norms = blocks.flatten(1).norm(dim=1)
    scale = torch.clamp(clip / norms.clamp_min(1e-30), max=1.0)
    return blocks * scale.view(-1, *([1] * (blocks.dim() - 1)))


def clean_statistics(bank: QueryBank, images: torch.Tensor, labels: Any, units: Any | None, num_classes: int,
                     clip: float, batch_size: int = 256) -> tuple[Statistics, np.ndarray]:
    """The sums of clipped unit blocks and of unit class fractions, before noise; and the unit norms.

    Pass 1 runs every query over the images, accumulating each unit's block norm and the sum with
    scale 1. Blocks are bounded by 1 - :data:`ROUNDING_MARGIN` (unit-norm features, weights
    summing to 1, the margin), so with ``clip >= 1`` pass 1 is the answer; otherwise (or if a block somehow exceeds ``clip``) pass 2
    recomputes the sum with each unit's clip factor. Nothing per unit is kept beyond its norm.
    """
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=images.device)
    codes_np, n_units = unit_codes(units, images.shape[0])
    codes = torch.as_tensor(codes_np, dtype=torch.long, device=images.device)
    per_unit = torch.bincount(codes, minlength=n_units).double()
    image_weight = (1.0 / per_unit[codes]).float()  # 1 / n_u for each image
    shrink = 1.0 - ROUNDING_MARGIN
    count = bank.count
    pairs = codes * num_classes + labels_t  # (unit, class) cell of each image

    def pass_over(scale_per_unit: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        sums, norm2 = None, torch.zeros(n_units, dtype=torch.float64, device=images.device)
        for t in range(count):
            with torch.no_grad():
                feats = torch.cat([bank.features(t, images[i : i + batch_size])
                                   for i in range(0, images.shape[0], batch_size)])
            contrib = feats * (image_weight * (shrink / math.sqrt(count)))[:, None]
            cells = torch.zeros(n_units * num_classes, feats.shape[1], device=images.device)
            cells.index_add_(0, pairs, contrib)
            norm2 += cells.double().pow(2).sum(dim=1).view(n_units, num_classes).sum(dim=1)
            if scale_per_unit is not None:
                cells = cells * scale_per_unit.repeat_interleave(num_classes)[:, None].float()
            per_class = cells.view(n_units, num_classes, -1).sum(dim=0)
            sums = per_class[None] if sums is None else torch.cat([sums, per_class[None]])
        return sums, norm2.sqrt()

    sums, norms = pass_over(None)
    if bool((norms > clip).any()):
        scale = torch.clamp(clip / norms.clamp_min(1e-30), max=1.0)
        sums, _ = pass_over(scale)
    fractions = torch.zeros(n_units, num_classes, dtype=torch.float64, device=images.device)
    fractions.index_put_((codes, labels_t), image_weight.double(), accumulate=True)
    weights = clip_rows(fractions, 1.0).sum(dim=0).float()  # norm <= 1 already; the clip states it
    return Statistics(sums=sums, weights=weights), norms.cpu().numpy()


def noise_generator() -> np.random.Generator:
    """A generator seeded by 128 secret bits: nobody, not even a rerun with the same --seed, redraws it."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


def add_noise(clean: Statistics, sigma: float, clip: float, generator: np.random.Generator) -> Statistics:
    """The release: N(0, sigma^2 C^2) on every sum coordinate, N(0, sigma^2) on every class weight."""
    device = clean.sums.device
    noise_s = generator.normal(0.0, sigma * clip, size=tuple(clean.sums.shape))
    noise_w = generator.normal(0.0, sigma, size=tuple(clean.weights.shape))
    return Statistics(sums=clean.sums + torch.as_tensor(noise_s, dtype=clean.sums.dtype, device=device),
                      weights=clean.weights + torch.as_tensor(noise_w, dtype=clean.weights.dtype, device=device))


def release(bank: QueryBank, images: torch.Tensor, labels: Any, units: Any | None, num_classes: int,
            settings: DPSettings, sigma: float) -> Statistics:
    """Clean statistics plus noise drawn once from :func:`noise_generator`; the clean sums are dropped.

    ``sigma = 0`` (``--dp-epsilon inf`` in the benchmark: the same code without noise) returns the
    clean statistics; the distill stage never passes 0.
    """
    clean, norms = clean_statistics(bank, images, labels, units, num_classes, settings.clip)
    clipped = int((norms > settings.clip).sum())
    if clipped:
        log.info("DP release: %d of %d unit blocks clipped to %g", clipped, norms.size, settings.clip)
    if sigma == 0:
        return clean
    return add_noise(clean, sigma, settings.clip, noise_generator())


def attributes(settings: DPSettings, sigma: float) -> dict[str, Any]:
    """The output file's ``dp`` attribute (no data-derived value: no unit count)."""
    spent = float("inf") if sigma == 0 else round(epsilon_spent(sigma, settings.delta, settings.accountant), 6)
    return {
        "epsilon": settings.epsilon, "delta": settings.delta, "epsilon_spent": spent,
        "noise_multiplier": sigma, "clip": settings.clip, "unit": settings.unit, "queries": settings.queries,
        "accountant": settings.accountant, "opacus_version": opacus_version(),
    }


def matching_loss(bank: QueryBank, targets: torch.Tensor, t: int, syn_by_class: list[torch.Tensor],
                  classes: list[int]) -> torch.Tensor:
    """DM's loss against the released targets under query ``t``, summed over ``classes``.

    Scaled by the feature dimension so that unit-norm features give gradients of the size DM's raw
    embeddings give (its reference learning rate then still fits).
    """
    total = None
    for syn, k in zip(syn_by_class, classes):
        mean = bank.features(t, syn).mean(dim=0)
        term = ((targets[t, k] - mean) ** 2).sum() * mean.shape[0]
        total = term if total is None else total + term
    return total
