"""The distillation engine: a registry of methods and the one loop they all share.

A method (DC, DSA, DM) is a strategy: it says how to build the network of an outer iteration,
how to turn a real batch and a synthetic batch per class into a loss, and what to do between two
updates of the synthetic images (DC/DSA train the network there). Everything else lives here
and is the same for every method:

* sampling real batches per class (one seeded ``torch.Generator``, also used for augmentation
  parameters, so a run is a function of ``--seed``),
* the synthetic tensor and its SGD optimizer (momentum 0.5, as in the reference),
* the loss curve, NaN/Inf detection and the progress bar,
* checkpoints (atomic, every K iterations, on Ctrl-C) and exact resume.

Each outer iteration seeds torch's global RNG with ``seed + iteration`` before the method builds
its fresh network, so a resumed run initializes the same networks as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from medcondense.atomic import atomic_path
from medcondense.errors import ConfigError, Interrupted, RuntimeFailure

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"
CHECKPOINT_FORMAT = 1


@dataclass
class Hyperparameters:
    """Everything that decides what a distillation run produces (stored in the output file).

    The values are resolved: presets and per-method defaults are already applied.
    """

    method: str
    ipc: int
    iterations: int
    lr_img: float
    lr_net: float
    batch_real: int
    outer_loop: int = 1
    inner_loop: int = 0
    batch_train: int = 256
    init: str = "real"
    aug: list[str] = field(default_factory=list)
    seed: int = 0
    batch_classes: bool = False
    amp: str = "off"
    compile: bool = False
    momentum_img: float = 0.5
    net: dict[str, Any] = field(default_factory=lambda: {"name": "convnet", "width": 128, "depth": 3, "norm": "instancenorm"})
    preset: str = "quick"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DataSpec:
    """Shape of the problem: image channels, size and number of classes."""

    channels: int
    image_size: int
    num_classes: int


class Method(ABC):
    """One distillation method: supplies the network and the loss; the engine does the rest.

    Subclasses register under a name with :func:`register` and set the reference defaults.
    """

    name: str = ""
    #: reference learning rate of the synthetic images
    default_lr_img: float = 0.1
    #: outer iterations per preset ("paper" = the reference's count)
    preset_iterations: dict[str, int] = {}
    #: real images per class per step, per preset ("paper" = the reference's 256)
    preset_batch_real: dict[str, int] = {}
    #: whether the method uses the DC outer/inner loop schedule
    uses_loops: bool = False
    #: whether the method applies DSA augmentation (DC does not; DSA and DM do)
    uses_augmentation: bool = False

    def __init__(self, hp: Hyperparameters, spec: DataSpec, device: torch.device):
        self.hp = hp
        self.spec = spec
        self.device = device

    @property
    def updates_per_iteration(self) -> int:
        """How many times the synthetic images are updated in one outer iteration."""
        return 1

    def build_net(self) -> nn.Module:
        """A freshly initialized ConvNet (global RNG seeded by the engine) on the device."""
        from medcondense.nets import build_net

        net_cfg = dict(self.hp.net)
        name = net_cfg.pop("name")
        net = build_net(name, self.spec.channels, self.spec.num_classes, self.spec.image_size, **net_cfg)
        return net.to(self.device)

    @abstractmethod
    def begin_iteration(self) -> Any:
        """Prepare one outer iteration (a fresh network, its optimizer); returns the method's state."""

    @abstractmethod
    def loss(self, state: Any, real: list[torch.Tensor], syn: list[torch.Tensor], aug: list[Any]) -> torch.Tensor:
        """The matching loss summed over classes.

        ``real[c]`` and ``syn[c]`` are the standardized real and synthetic batches of class ``c``;
        ``aug[c]`` the augmentation parameters sampled for that class (``None`` without aug), to
        apply identically to both batches.
        """

    def between_updates(self, state: Any, syn_images: torch.Tensor, syn_labels: torch.Tensor, generator: torch.Generator) -> None:
        """Work between two image updates of one iteration (DC/DSA train the network); default none."""


METHODS: dict[str, type[Method]] = {}


def register(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: add a method to :data:`METHODS` under ``name``."""

    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def method_class(name: str) -> type[Method]:
    """The registered method class called ``name``, or a ConfigError listing the valid names."""
    import medcondense.distill.dc  # noqa: F401  (registration side effects)
    import medcondense.distill.dm  # noqa: F401
    import medcondense.distill.dsa  # noqa: F401

    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; expected one of {', '.join(sorted(METHODS))}") from None


# --------------------------------------------------------------------------- augmentation


class Augmenter:
    """Samples and applies DSA augmentation with the shared generator; a no-op without ops."""

    def __init__(self, ops: list[str], device: torch.device):
        self.ops = list(ops)
        self.device = device

    def __bool__(self) -> bool:
        return bool(self.ops)

    def sample(self, generator: torch.Generator, per_sample: int | None = None) -> Any:
        """One op with its parameters (mode 'S'), or ``None`` when augmentation is off.

        ``per_sample=None`` draws one parameter for the whole batch (Siamese: shared by the real
        and the synthetic batch); ``per_sample=N`` draws one per image of a batch of N, as the
        reference does when it trains a network on augmented images.
        """
        if not self.ops:
            return None
        from medcondense.distill.augment import sample_params

        return sample_params(self.ops, generator, self.device, per_sample=per_sample)

    @staticmethod
    def apply(x: torch.Tensor, params: Any) -> torch.Tensor:
        """``x`` augmented with ``params`` (differentiable), or ``x`` itself for ``None``."""
        if params is None:
            return x
        from medcondense.distill.augment import apply_aug

        return apply_aug(x, params)


# --------------------------------------------------------------------------- real batches


class RealSampler:
    """Random batches of one class's standardized real training images (reference ``get_images``)."""

    def __init__(self, images_by_class: list[torch.Tensor]):
        self.images_by_class = images_by_class

    def sample(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Up to ``n`` distinct images of class ``c`` (all of them when the class has fewer)."""
        pool = self.images_by_class[c]
        order = torch.randperm(pool.shape[0], generator=generator)[:n]
        return pool[order.to(pool.device)]


# --------------------------------------------------------------------------- checkpoints


def checkpoint_path_for(output: str | Path) -> Path:
    """Where the checkpoint of a run writing ``output`` lives: ``<output>.ckpt``."""
    output = Path(output)
    return output.with_name(output.name + CHECKPOINT_SUFFIX)


@dataclass
class LoopState:
    """What the engine carries from one iteration to the next (and what a checkpoint holds)."""

    iteration: int  # the next iteration to run
    syn: torch.Tensor
    optimizer_state: dict[str, Any]
    generator_state: torch.Tensor
    loss_curve: list[list[float]]

    def snapshot(self) -> "LoopState":
        """A deep copy, so later updates do not change it."""
        return LoopState(
            iteration=self.iteration,
            syn=self.syn.detach().clone(),
            optimizer_state=copy.deepcopy(self.optimizer_state),
            generator_state=self.generator_state.clone(),
            loss_curve=[list(p) for p in self.loss_curve],
        )


def save_checkpoint(
    path: Path, state: LoopState, hp: Hyperparameters, run_key: str, source_hash: str,
    config: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (:func:`medcondense.atomic.atomic_path`).

    It holds the method name and resolved hyper-parameters (enough to rebuild the method with
    :func:`rebuild_method`), the stage config, the next iteration, the synthetic images, the
    optimizer state, the RNG states and the loss curve.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "method": hp.method,
        "hyperparameters": hp.to_dict(),
        "config": config or {},
        "run_key": run_key,
        "source_hash": source_hash,
        "iteration": state.iteration,
        "syn": state.syn.detach().cpu(),
        "optimizer": _to_cpu(state.optimizer_state),
        "generator": state.generator_state,
        "torch_rng": torch.get_rng_state(),
        "loss_curve": state.loss_curve,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, run_key: str, source_hash: str) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to this run (same source content and settings).

    Raises
    ------
    ConfigError
        The checkpoint is unreadable, or was made from another source file or other settings.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        raise ConfigError(f"unreadable checkpoint ({type(exc).__name__}); delete it to start over", path=path) from None
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError("checkpoint of an unknown format; delete it to start over", path=path)
    if payload.get("source_hash") != source_hash:
        raise ConfigError("checkpoint was made from another input file; delete it or drop --resume", path=path)
    if payload.get("run_key") != run_key:
        raise ConfigError(
            "checkpoint was made with other settings "
            f"(method {payload.get('method')}, {payload.get('hyperparameters')}); use the same options or drop --resume",
            path=path,
        )
    return payload


def initial_state(syn_init: torch.Tensor, generator: torch.Generator) -> LoopState:
    """The loop state before iteration 0: the initial images and the generator as seeded."""
    return LoopState(0, syn_init.detach().clone(), {}, generator.get_state(), [])


def state_from_checkpoint(payload: dict[str, Any], device: torch.device) -> LoopState:
    """The loop state a checkpoint holds, with its tensors on ``device``."""
    return LoopState(
        iteration=int(payload["iteration"]),
        syn=payload["syn"].to(device),
        optimizer_state=_to_device(payload["optimizer"], device),
        generator_state=payload["generator"],
        loss_curve=[list(p) for p in payload["loss_curve"]],
    )


def rebuild_method(payload: dict[str, Any], spec: DataSpec, device: torch.device) -> Method:
    """The method a checkpoint was made with, rebuilt from its name and hyper-parameters."""
    return method_class(payload["method"])(Hyperparameters(**payload["hyperparameters"]), spec, device)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


# --------------------------------------------------------------------------- the loop


@dataclass
class EngineHooks:
    """Callbacks the engine calls; tests use ``after_iteration`` to interrupt a run."""

    after_iteration: Callable[[int, float], None] | None = None


class Engine:
    """Runs a :class:`Method` over a real set: the shared outer loop with checkpoints.

    Parameters
    ----------
    method : the strategy (knows its hyper-parameters and device)
    sampler : real batches per class
    syn_labels : label of each synthetic image, ``ipc`` per class in class order
    checkpoint : path of the checkpoint file (``None``: no checkpoints)
    checkpoint_every : write a checkpoint every K completed iterations (0: only on Ctrl-C/NaN)
    run_key, source_hash : identify the run inside its checkpoints
    hooks : callbacks (see :class:`EngineHooks`)
    config : the stage config, recorded in checkpoints
    """

    def __init__(
        self,
        method: Method,
        sampler: RealSampler,
        syn_labels: torch.Tensor,
        *,
        checkpoint: Path | None,
        checkpoint_every: int,
        run_key: str,
        source_hash: str,
        hooks: EngineHooks | None = None,
        config: dict[str, Any] | None = None,
    ):
        self.method = method
        self.hp = method.hp
        self.sampler = sampler
        self.syn_labels = syn_labels
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.run_key = run_key
        self.source_hash = source_hash
        self.hooks = hooks or EngineHooks()
        self.config = config or {}
        self.augmenter = Augmenter(self.hp.aug, method.device)

    def _save(self, state: LoopState) -> None:
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, state, self.hp, self.run_key, self.source_hash, self.config)
            log.debug("checkpoint at iteration %d: %s", state.iteration, self.checkpoint)

    # -- loop -----------------------------------------------------------------------------
    def run(self, state: LoopState, progress: Any = None) -> LoopState:
        """Run the remaining outer iterations from ``state``; return the final state.

        Raises
        ------
        RuntimeFailure
            The loss became NaN/Inf (the last good state is kept as the checkpoint).
        Interrupted
            Ctrl-C; the last completed iteration is saved as the checkpoint first.
        """
        hp = self.hp
        syn = state.syn.detach().clone().requires_grad_(True)
        optimizer = torch.optim.SGD([syn], lr=hp.lr_img, momentum=hp.momentum_img)
        if state.optimizer_state:
            optimizer.load_state_dict(state.optimizer_state)
        generator = torch.Generator().set_state(state.generator_state)
        good = state.snapshot()
        try:
            for it in range(state.iteration, hp.iterations + 1):
                loss = self._iteration(it, syn, optimizer, generator)
                curve = good.loss_curve + [[it, loss]]
                good = LoopState(it + 1, syn, optimizer.state_dict(), generator.get_state(), curve).snapshot()
                if progress is not None:
                    progress.advance()
                    progress.update(status=f"loss {loss:.4f}")
                if self.checkpoint_every and (it + 1) % self.checkpoint_every == 0 and it < hp.iterations:
                    self._save(good)
                if self.hooks.after_iteration is not None:
                    self.hooks.after_iteration(it, loss)
        except KeyboardInterrupt:
            self._save(good)
            where = f"; checkpoint kept at {self.checkpoint} (rerun with --resume)" if self.checkpoint else ""
            raise Interrupted(f"interrupted after iteration {good.iteration - 1}{where}") from None
        except _NonFinite as bad:
            self._save(good)
            kept = f"; kept the checkpoint of iteration {good.iteration - 1} at {self.checkpoint}" if self.checkpoint else ""
            raise RuntimeFailure(
                f"{hp.method} loss became {bad.value} at iteration {bad.iteration}{kept}",
                hint="lower --lr-img, or check the input for constant or extreme images",
            ) from None
        except torch.OutOfMemoryError:
            self._save(good)
            raise RuntimeFailure(
                f"out of device memory at iteration {good.iteration} ({self.method.device})",
                hint=f"lower --batch-real (now {hp.batch_real}), use --batch-classes off, or a smaller --ipc (now {hp.ipc})",
            ) from None
        return good

    def _iteration(self, it: int, syn: torch.Tensor, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
        """One outer iteration; returns the mean loss per class and update (as the reference logs it)."""
        hp, method = self.hp, self.method
        torch.manual_seed(hp.seed + it)  # the iteration's fresh network: identical after resume
        state = method.begin_iteration()
        total = 0.0
        updates = method.updates_per_iteration
        for step in range(updates):
            real = [self.sampler.sample(c, hp.batch_real, generator) for c in range(method.spec.num_classes)]
            aug = [self.augmenter.sample(generator) for _ in range(method.spec.num_classes)]
            syn_by_class = list(syn.split(hp.ipc))
            loss = method.loss(state, real, syn_by_class, aug)
            value = float(loss.detach())
            if not torch.isfinite(torch.tensor(value)):
                raise _NonFinite(it, value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += value
            if step < updates - 1:
                method.between_updates(state, syn.detach(), self.syn_labels, generator)
        if not bool(torch.isfinite(syn.detach()).all()):  # a finite loss can still blow up the images
            raise _NonFinite(it, float("nan"))
        return total / (method.spec.num_classes * updates)


class _NonFinite(Exception):
    def __init__(self, iteration: int, value: float):
        super().__init__(f"non-finite loss {value} at iteration {iteration}")
        self.iteration = iteration
        self.value = value
