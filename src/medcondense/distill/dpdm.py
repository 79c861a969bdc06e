"""DP-DM: distribution matching against a differentially private release (``--method dm --dp-epsilon``).

DM matches, per class, the mean embedding of real and synthetic images in random networks. DP-DM
keeps the synthetic side and replaces the real side by the statistics :mod:`.dp` releases once,
with Gaussian noise, at the start of a fresh run (:meth:`DPDMMethod.init_state`). Every iteration
picks one of the ``T`` public queries (a seeded random network and augmentation draw) with the
engine's generator and matches the synthetic class means of that query to the released ones.

The engine samples no real batches for it (``uses_real_batches = False``). The released statistics
are the method's state: checkpointed under ``"method_state"``, reloaded by ``--resume``, never
recomputed (a second release would spend privacy budget nobody accounted for).

The guarantee's other conditions are checked where they are decided: :meth:`refine` refuses an
explicit ``--init real`` and batch norm, and defaults the init to noise; the distill stage refuses
data normalised with train statistics, standardises with fixed constants and writes no
data-derived attribute (docs/distill.md, "Differential privacy").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medcondense.config import DistillConfig
from medcondense.distill import dp
from medcondense.distill.base import DataSpec, Hyperparameters, Method
from medcondense.errors import ConfigError


class DPDMMethod(Method):
    """DM whose real side is a noisy statistic released once."""

    name = "dp-dm"
    default_lr_img = 1.0
    preset_iterations = {"quick": 200, "paper": 20000}
    preset_batch_real = {"quick": 64, "paper": 256}  # unused: no real batches are sampled
    uses_augmentation = True
    uses_real_batches = False
    #: torchrun (docs/distributed.md): refused with exit 2, so the statistics are released once
    class_shards_refusal = ("its noisy statistics are released once, from noise that is not the shared "
                            "generator's (each rank would release its own)")

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
        """Release the noisy statistics (fresh runs only; the noise does not come from ``generator``)."""
        if self._private is None:
            raise ConfigError("DP-DM needs the real train images before its release (set_private_data)")
        images, labels, units = self._private
        self._private = None
        self.statistics = dp.release(self.bank, images, labels, units, self.spec.num_classes, self.settings, self.sigma)
        self._targets = self.statistics.targets()

    def state_dict(self) -> dict[str, Any]:
        if self.statistics is None:
            return {}
        return {"dp_release": self.statistics.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "dp_release" not in state:
            raise ConfigError("checkpoint holds no DP release; delete it to start over (a new release spends budget)")
        self.statistics = dp.Statistics.from_state(state["dp_release"], self.device)
        self._targets = self.statistics.targets()

    # -- one iteration -------------------------------------------------------------------------
    def begin_iteration(self, generator: torch.Generator | None = None) -> int:
        """The query of this iteration, drawn from the engine's generator (exact on resume)."""
        return int(torch.randint(self.settings.queries, (1,), generator=generator).item())

    def loss(self, state: Any, real: list[torch.Tensor], syn: list[torch.Tensor], aug: list[Any]) -> torch.Tensor:
        if self._targets is None:
            raise ConfigError("DP-DM has no released statistics (neither a fresh release nor a checkpoint)")
        return dp.matching_loss(self.bank, self._targets, int(state), syn, self.classes)


def settings_from_config(config: DistillConfig) -> dp.DPSettings:
    """The ``--dp-*`` options as :class:`~medcondense.distill.dp.DPSettings` (delta defaults to 1e-5)."""
    return dp.DPSettings(
        epsilon=float(config.dp_epsilon), delta=float(config.dp_delta if config.dp_delta is not None else 1e-5),
        clip=config.dp_clip, unit=config.dp_unit, queries=config.dp_queries, accountant=config.dp_accountant,
    )
