"""DP-DM: distribution matching against a differentially private release (``--method dm --dp-epsilon``).

DM matches, per class, the mean embedding of real and synthetic images in random networks. DP-DM
keeps the synthetic side and replaces the real side by the statistics :mod:`.dp` releases once,
with Gaussian noise, at the start of a fresh run (:meth:`DPDMMethod.init_state`). Every iteration
picks one of the ``T`` public queries (a seeded random network and augmentation draw) with the
engine's generator and matches the synthetic class means of that query to the released ones.

The engine samples no real batches for it (``uses_real_batches = False``). The released statistics
are the method's state: checkpointed under ``"method_state"``, reloaded by ``--resume``, never
recomputed (a second release would spend privacy budget nobody accounted for). Under torchrun
rank 0 alone releases and broadcasts the statistics; the ranks then split the classes as DM's do.

The guarantee's other conditions are checked where they are decided: :meth:`refine` refuses an
explicit ``--init real`` and batch norm, and defaults the init to noise; the distill stage refuses
data normalised with train statistics, standardises with fixed constants and writes no
data-derived attribute (docs/distill.md, "Differential privacy").
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch

from medcondense.config import DistillConfig
from medcondense.distill import dp
from medcondense.distill.base import DataSpec, Hyperparameters, Method
from medcondense.errors import ConfigError, RuntimeFailure

log = logging.getLogger(__name__)


class DPDMMethod(Method):
    """DM whose real side is a noisy statistic released once."""

    name = "dp-dm"
    default_lr_img = 1.0
    preset_iterations = {"quick": 200, "paper": 20000}
    preset_batch_real = {"quick": 64, "paper": 256}  # unused: no real batches are sampled
    uses_augmentation = True
    uses_real_batches = False
    #: torchrun (docs/distributed.md): rank 0 alone releases the statistics and broadcasts them;
    #: then each rank matches its classes against them, as DM does
    supports_class_shards = True

    @classmethod
    def refine(cls, hp: Hyperparameters, config: DistillConfig, device: torch.device) -> Hyperparameters:
        """Refuse what would break the guarantee; record the DP settings and sigma in ``extra``."""
        if config.init not in (None, "noise"):
            raise ConfigError(f"--init {config.init} with --dp-epsilon: DP-DM must start from noise "
                              "(real images as a start would be released unaccounted)", hint="drop --init or use --init noise")
        hp.init = "noise"
        if str(hp.net.get("norm", "")).lower() == "batchnorm":
            raise ConfigError("--dp-epsilon with batch norm: batch statistics mix images across units; "
                              "use instancenorm")
        settings = settings_from_config(config)
        dp.check_settings(settings, units=0)
        hp.amp, hp.batch_classes = "off", False  # the release is float32; keep the matching so too
        sigma = 0.0 if settings.epsilon == float("inf") else dp.noise_multiplier(settings.epsilon, settings.delta,
                                                                                   settings.accountant)
        hp.extra = {**hp.extra, "dp": {"epsilon": settings.epsilon, "delta": settings.delta, "clip": settings.clip,
                                       "unit": settings.unit, "queries": settings.queries,
                                       "accountant": settings.accountant, "noise_multiplier": sigma}}
        return hp

    def __init__(self, hp: Hyperparameters, spec: DataSpec, device: torch.device):
        super().__init__(hp, spec, device)
        cfg = hp.extra["dp"]
        self.settings = dp.DPSettings(epsilon=cfg["epsilon"], delta=cfg["delta"], clip=cfg["clip"], unit=cfg["unit"],
                                      queries=cfg["queries"], accountant=cfg["accountant"])
        self.sigma = float(cfg["noise_multiplier"])
        self.bank = dp.QueryBank(self.settings.queries, hp.seed, self._make_net, self._sample_aug, self._apply_aug)
        self.statistics: dp.Statistics | None = None
        self._targets: torch.Tensor | None = None
        self._private: tuple[torch.Tensor, np.ndarray, np.ndarray | None] | None = None

    # -- queries --------------------------------------------------------------------------------
    def _make_net(self) -> torch.nn.Module:
        net = self.build_net()
        net.train()  # as DM: instance norm behaves the same in both modes; no running statistics
        return net

    def _sample_aug(self, generator: torch.Generator) -> Any:
        if not self.hp.aug:
            return None
        from medcondense.augment import sample_params

        return sample_params(self.hp.aug, generator, self.device)

    @staticmethod
    def _apply_aug(x: torch.Tensor, params: Any) -> torch.Tensor:
        from medcondense.augment import apply_aug

        return apply_aug(x, params)

    # -- the release ---------------------------------------------------------------------------
    def set_private_data(self, images: torch.Tensor, labels: np.ndarray, units: np.ndarray | None) -> None:
        """The standardized real train images, labels and unit ids the release is computed from.

        Used once, by :meth:`init_state`, and dropped there.
        """
        self._private = (images, np.asarray(labels), units)

    def init_state(self, syn: torch.Tensor, generator: torch.Generator) -> None:
        """Release the noisy statistics (fresh runs only; the noise does not come from ``generator``).

        Under torchrun rank 0 alone computes the release and broadcasts it (a collective with the
        group's timeout): the noise is secret and per process, so a release on every rank would
        spend the budget W times and match each class against another noise draw. Every rank
        then checks that it holds the same release (:meth:`_agree_on_release`).
        """
        if self._private is None:
            raise ConfigError("DP-DM needs the real train images before its release (set_private_data)")
        images, labels, units = self._private
        self._private = None

        def release() -> dict[str, torch.Tensor]:
            statistics = dp.release(self.bank, images, labels, units, self.spec.num_classes, self.settings, self.sigma)
            log.info("released the DP statistics (once%s): %s", " on rank 0" if self.group.active else "",
                     release_digest(statistics))
            return statistics.state_dict()  # CPU tensors: they travel to every rank as they are

        shared = self.group.on_main(release, "the DP release")
        self.statistics = dp.Statistics.from_state(shared, self.device)
        self._targets = self.statistics.targets()
        self._agree_on_release()

    def _agree_on_release(self) -> None:
        """With several ranks: every rank must match against the same release (a fresh one from
        rank 0, or the checkpoint's); a rank holding another would silently mix two releases."""
        if not self.group.active or self.statistics is None:
            return
        digests = self.group.all_gather(release_digest(self.statistics), "comparing the DP release")
        if len(set(digests)) > 1:
            raise RuntimeFailure(f"the ranks hold different DP releases {digests} (rank order); "
                                 "nothing was written", hint="keep the checkpoint on a file system all nodes share")

    @property
    def release_id(self) -> str | None:
        """A digest of the released statistics in use (the ``--json`` summary's ``dp_release``)."""
        return None if self.statistics is None else release_digest(self.statistics)

    def state_dict(self) -> dict[str, Any]:
        if self.statistics is None:
            return {}
        return {"dp_release": self.statistics.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "dp_release" not in state:
            raise ConfigError("checkpoint holds no DP release; delete it to start over (a new release spends budget)")
        held = self.statistics is not None  # the engine reloads the state it was just given
        self.statistics = dp.Statistics.from_state(state["dp_release"], self.device)
        self._targets = self.statistics.targets()
        if held:
            return
        log.info("reusing the DP release of the checkpoint: %s (no new release, no new budget)",
                 release_digest(self.statistics))
        self._agree_on_release()

    # -- one iteration -------------------------------------------------------------------------
    def begin_iteration(self, generator: torch.Generator | None = None) -> int:
        """The query of this iteration, drawn from the engine's generator (exact on resume)."""
        return int(torch.randint(self.settings.queries, (1,), generator=generator).item())

    def loss(self, state: Any, real: list[torch.Tensor], syn: list[torch.Tensor], aug: list[Any]) -> torch.Tensor:
        if self._targets is None:
            raise ConfigError("DP-DM has no released statistics (neither a fresh release nor a checkpoint)")
        return dp.matching_loss(self.bank, self._targets, int(state), syn, self.classes)


def release_digest(statistics: dp.Statistics) -> str:
    """The first 16 hex digits of the sha256 of the released sums and class weights: names one
    release (post-processing of the noisy statistics, so it reveals nothing more than they do)."""
    digest = hashlib.sha256()
    for tensor in (statistics.sums, statistics.weights):
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def settings_from_config(config: DistillConfig) -> dp.DPSettings:
    """The ``--dp-*`` options as :class:`~medcondense.distill.dp.DPSettings` (delta defaults to 1e-5)."""
    return dp.DPSettings(
        epsilon=float(config.dp_epsilon), delta=float(config.dp_delta if config.dp_delta is not None else 1e-5),
        clip=config.dp_clip, unit=config.dp_unit, queries=config.dp_queries, accountant=config.dp_accountant,
    )
