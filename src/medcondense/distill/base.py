"""The distillation engine: the :class:`Method` API and the one loop every method shares.

A method (DC, DSA, DM) is a strategy: it resolves its own hyper-parameters
(:meth:`Method.resolve`), says how to build the network of an outer iteration, how to turn a
real batch and a synthetic batch per class into a loss (or writes the images' gradients itself,
:attr:`Method.writes_own_gradients`), may own state besides the images (:meth:`Method.init_state`,
:meth:`Method.state_dict`), and what to do between two updates of the synthetic images (DC/DSA
train the network there). Methods are found by name in :mod:`medcondense.distill.registry`.
Everything else lives here and is the same for every method:

* sampling real batches per class (one seeded ``torch.Generator``, also used for augmentation
  parameters, so a run is a function of ``--seed``),
* the synthetic tensor and its SGD optimizer (momentum 0.5, as in the reference),
* the loss curve, NaN/Inf detection and the progress bar,
* checkpoints (atomic, every K iterations, on Ctrl-C; format :data:`CHECKPOINT_FORMAT`, with the
  method's state) and exact resume,
* class shards: an engine may compute only some classes (``Engine(classes=...)``) while drawing
  the random numbers of every class, so one process and N processes agree.

Each outer iteration seeds torch's global RNG with ``seed + iteration`` before the method builds
its fresh network, so a resumed run initializes the same networks as an uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
from abc import ABC
from dataclasses import asdict, dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from medcondense.atomic import atomic_path
from medcondense.config import DistillConfig
from medcondense.distill.registry import method_class
from medcondense.errors import ConfigError, Interrupted, RuntimeFailure

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"
#: version of the checkpoint payload; 2 added ``"method_state"`` (format 1 files are refused)
CHECKPOINT_FORMAT = 2


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
    #: method-specific resolved settings (JSON-able), e.g. MTT's expert settings
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (the output's ``hyperparameters``, part of the run key).

        ``extra`` is left out while empty, so the methods without extra settings (DC, DSA, DM)
        keep the dicts and run keys they had before ``extra`` existed.
        """
        values = asdict(self)
        if not values["extra"]:
            del values["extra"]
        return values


@dataclass
class DataSpec:
    """Shape of the problem: image channels, size and number of classes."""

    channels: int
    image_size: int
    num_classes: int


@dataclass
class PrepareContext:
    """What :meth:`Method.prepare` may use: the real training data and where the run reads and writes.

    ``images`` are the standardized real train images (on the run's device), ``labels`` their
    classes; ``config`` is the stage config; ``progress(title, total)`` opens a progress bar.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source_hash: str
    class_names: list[str]
    input: str
    output: str
    config: DistillConfig
    progress: Callable[[str, int], Any] | None = None


class Method(ABC):
    """One distillation method: resolves its settings, supplies the network and the loss.

    The engine does the rest. A subclass lives in its own module, is named in
    :data:`medcondense.distill.registry.METHODS`, sets :attr:`name` to its table key and the
    reference defaults below, and implements :meth:`begin_iteration` and :meth:`loss` (or sets
    :attr:`writes_own_gradients` and implements :meth:`backward`). Optional hooks:
    :meth:`resolve`/:meth:`refine` (method-specific defaults), :meth:`between_updates`,
    :meth:`after_step`, and :meth:`init_state`/:meth:`state_dict`/:meth:`load_state_dict` for
    state besides the images (checkpointed, so ``--resume`` stays exact).

    Every random draw must come from the engine's ``generator`` (handed to
    :meth:`begin_iteration`, :meth:`between_updates` and :meth:`backward`) or from torch's global
    RNG inside :meth:`begin_iteration`, which the engine seeds with ``seed + iteration``.
    """

    #: the method's key in the registry table (and ``hp.method``)
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
    #: whether the engine samples real batches (and Siamese augmentation parameters) per class
    #: for :meth:`loss`; False: it draws none, and no random numbers for them
    uses_real_batches: bool = True
    #: whether the engine calls :meth:`backward` (which sets ``syn.grad``) instead of
    #: ``loss(...).backward()``
    writes_own_gradients: bool = False
    #: whether the method runs under torchrun with its classes split over the ranks
    #: (``Engine(classes=...)``): its loss of a class depends only on that class's synthetic
    #: images, the network of an iteration only on the seeded global RNG and the generator, and
    #: its own state (if any) is the same on every rank. DC, DSA and DM say True; a new method
    #: is refused under torchrun (exit 2) until it says so (docs/distill.md, "Adding a method")
    supports_class_shards: bool = False
    #: why the method cannot be split (said in the exit-2 message under torchrun), e.g. MTT's
    #: "one trajectory couples all classes"
    class_shards_refusal: str = ""
    #: whether the loss is a sum over classes, logged per class (as the reference logs DC/DM);
    #: False: one loss for the whole set, logged as it is (MTT's trajectory distance)
    loss_per_class: bool = True

    def __init__(self, hp: Hyperparameters, spec: DataSpec, device: torch.device):
        self.hp = hp
        self.spec = spec
        self.device = device
        #: the class ids this process computes, in the order of the lists :meth:`loss` receives
        #: (the engine sets it; all classes by default)
        self.classes: list[int] = list(range(spec.num_classes))
        #: the real training images by class (the engine sets it; for methods that train
        #: networks on real data, e.g. IDM's queue); draw from it with the engine's generator
        self.sampler: "RealSampler | None" = None
        #: the torchrun process group (the stage sets it; one process by default). Methods use
        #: it only for work done once for all ranks (DP-DM's release, MTT's expert build)
        from medcondense import distributed

        self.group: Any = distributed.SINGLE

    # -- hyper-parameters ---------------------------------------------------------------------
    @classmethod
    def resolve(cls, config: DistillConfig, device: torch.device, laterality: bool) -> Hyperparameters:
        """The run's hyper-parameters: explicit options, else ``--preset``, else the reference defaults.

        The common rules live here; a method adds its own in :meth:`refine` (DC: the loop table;
        DM: batched classes; settings without a field go into ``Hyperparameters.extra``).
        ``--compile auto`` is decided last, from the refined loop count.
        """
        iterations = config.iterations if config.iterations is not None else cls.preset_iterations[config.preset]
        batch_real = config.batch_real if config.batch_real is not None else cls.preset_batch_real[config.preset]
        amp = config.amp
        if amp == "auto":
            # bf16 autocast of the first-order passes on a CPU with native bf16 (benchmarks/
            # versus_reference.py, alone: DM 1.5-1.6x, DC 1.3x at batch_real 256 and 1.2x at 64;
            # accuracy within noise of float32 in benchmarks/fidelity.py). CUDA: not measured here.
            amp = "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "off"
        hp = Hyperparameters(
            method=cls.name,
            ipc=config.ipc,
            iterations=iterations,
            lr_img=float(config.lr_img if config.lr_img is not None else cls.default_lr_img),
            lr_net=float(config.lr_net),
            batch_real=batch_real,
            init=config.init or "real",  # None: the method's default (DP-DM: noise)
            aug=resolve_aug(config, cls.uses_augmentation, laterality),
            seed=config.seed,
            amp=amp,
            preset=config.preset,
        )
        hp = cls.refine(hp, config, device)
        hp.compile = resolve_compile(config, device, (hp.iterations + 1) * hp.outer_loop, hp.batch_real)
        return hp

    @classmethod
    def refine(cls, hp: Hyperparameters, config: DistillConfig, device: torch.device) -> Hyperparameters:
        """Method-specific resolution on top of the common one; default: ``hp`` unchanged."""
        return hp

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

    # -- stored form of the images -----------------------------------------------------------
    @property
    def init_images_per_stored(self) -> int:
        """Real images one stored synthetic image starts from (IDM: ``factor**2``); default 1."""
        return 1

    def encode_init(self, images: torch.Tensor) -> torch.Tensor:
        """Initial stored images from ``init_images_per_stored`` real images each (grouped by
        class, consecutive); default: the images themselves."""
        return images

    # -- method state -------------------------------------------------------------------------
    def init_state(self, syn: torch.Tensor, generator: torch.Generator) -> None:
        """Create the method's own state for a fresh run (not called on resume); default none.

        ``syn`` holds the initial (standardized) images; draw any randomness from ``generator``.
        """

    def state_dict(self) -> dict[str, Any]:
        """The method's own state (tensors, optimizer states; torch.save-able); default empty."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, tensors already on the method's device.

        :meth:`Engine.run` calls it first whenever its start state holds a method state: on
        resume (from the checkpoint) and after :meth:`init_state` (its own state, a no-op copy).
        """
        if state:
            raise ConfigError(f"checkpoint holds state for method {self.hp.method}, which keeps none; delete it to start over")

    # -- one iteration ------------------------------------------------------------------------
    def begin_iteration(self, generator: torch.Generator | None = None) -> Any:
        """Prepare one outer iteration (a fresh network, its optimizer); returns the method's state.

        Torch's global RNG is seeded with ``seed + iteration`` just before this call.
        """
        return None

    def loss(self, state: Any, real: list[torch.Tensor], syn: list[torch.Tensor], aug: list[Any]) -> torch.Tensor:
        """The matching loss summed over the classes in :attr:`classes`.

        ``real[i]`` and ``syn[i]`` are the standardized real and synthetic batches of class
        ``self.classes[i]``; ``aug[i]`` the augmentation parameters sampled for that class
        (``None`` without aug), to apply identically to both batches. Without
        :attr:`uses_real_batches`, ``real`` is empty and ``aug`` all ``None``.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither loss() nor backward()")

    def backward(self, state: Any, syn: torch.Tensor, generator: torch.Generator) -> float:
        """Set ``syn.grad`` (all images, [N, C, H, W]) and return the loss value.

        Called instead of ``loss(...).backward()`` when :attr:`writes_own_gradients`; ``syn.grad``
        is ``None`` on entry. Rows of classes outside :attr:`classes` must get zero gradient.
        """
        raise NotImplementedError(f"{type(self).__name__} sets writes_own_gradients but has no backward()")

    def after_step(self, state: Any) -> None:
        """Called after every step of the images' optimizer (e.g. step an extra optimizer); default none."""

    # -- around the loop --------------------------------------------------------------------
    def prepare(self, context: PrepareContext) -> dict[str, Any]:
        """Work on the real data before the loop, on fresh and resumed runs alike (MTT builds or
        loads its expert trajectories); returns JSON-able facts for the stage's result. Default none."""
        return {}

    def output_attrs(self) -> dict[str, Any]:
        """Root attributes the output records for this method (MTT: ``learned_lr``; IDM: how to
        decode its factorised images); default none."""
        return {}

    def between_updates(self, state: Any, syn_images: torch.Tensor, syn_labels: torch.Tensor, generator: torch.Generator) -> None:
        """Work between two image updates of one iteration (DC/DSA train the network); default none."""


# --------------------------------------------------------------------------- resolution helpers


def resolve_aug(config: DistillConfig, uses_augmentation: bool, laterality: bool) -> list[str]:
    """The augmentation ops of the run: ``--aug`` (``none`` for no augmentation) or the default set.

    The default leaves out horizontal flip when the data set says laterality matters.
    """
    from medcondense.augment import default_ops, validate_ops

    if not uses_augmentation:
        if config.aug:
            log.warning("--method %s does not augment; ignoring --aug %s", config.method, ",".join(config.aug))
        return []
    if config.aug is None:
        return list(default_ops(laterality))
    if [op.strip().lower() for op in config.aug] == ["none"]:
        return []
    try:
        ops = validate_ops(config.aug)
    except ConfigError as exc:
        raise ConfigError(f"--aug: {exc.message} (or none)") from None
    if "flip" in ops and laterality:
        log.warning("--aug includes flip although the data set marks laterality as meaningful")
    return ops


#: ``--compile auto`` compiles when a run sends at least this many real images per class through
#: the network (updates x batch_real): compiling costs 5-20 s on 2 cores and saved about 0.3 ms
#: per real image (DM, benchmarks/versus_reference.py), so ~50,000 images (10 classes) repay it
COMPILE_MIN_REAL_IMAGES_PER_CLASS = 5000


def resolve_compile(config: DistillConfig, device: torch.device, updates: int, batch_real: int) -> bool:
    """Whether the first-order network passes go through ``torch.compile``.

    ``updates`` is the number of image updates of the whole run. ``auto`` compiles on a CPU with
    a C++ compiler when the run is long enough to repay the compile time. Not on CUDA: compiled
    CUDA code has not been measured against eager there.
    """
    if config.compile != "auto":
        return config.compile == "on"
    long_enough = updates * batch_real >= COMPILE_MIN_REAL_IMAGES_PER_CLASS
    return device.type == "cpu" and long_enough and has_cxx_compiler()


def has_cxx_compiler() -> bool:
    """True when the C++ compiler torch.compile uses on a CPU is on the PATH."""
    import shutil

    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 (AVX512-BF16 / AMX); elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
        from medcondense.augment import sample_params

        return sample_params(self.ops, generator, self.device, per_sample=per_sample)

    @staticmethod
    def apply(x: torch.Tensor, params: Any) -> torch.Tensor:
        """``x`` augmented with ``params`` (differentiable), or ``x`` itself for ``None``."""
        if params is None:
            return x
        from medcondense.augment import apply_aug

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
    #: the method's own state (:meth:`Method.state_dict`)
    method_state: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> "LoopState":
        """A deep copy, so later updates do not change it."""
        return LoopState(
            iteration=self.iteration,
            syn=self.syn.detach().clone(),
            optimizer_state=copy.deepcopy(self.optimizer_state),
            generator_state=self.generator_state.clone(),
            loss_curve=[list(p) for p in self.loss_curve],
            method_state=_detached_copy(self.method_state),
        )


def save_checkpoint(
    path: Path, state: LoopState, hp: Hyperparameters, run_key: str, source_hash: str,
    config: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (:func:`medcondense.atomic.atomic_path`).

    It holds the method name and resolved hyper-parameters (enough to rebuild the method with
    :func:`rebuild_method`), the stage config, the next iteration, the synthetic images, the
    optimizer state, the method's own state (``"method_state"``), the RNG states and the loss
    curve.
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
        "method_state": _to_cpu(state.method_state),
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
    found = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(found, int) and not isinstance(found, bool) and found < CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint of an older format ({found}; this version writes {CHECKPOINT_FORMAT}); "
                          "delete it to start over", path=path)
    if found != CHECKPOINT_FORMAT:
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


def initial_state(syn_init: torch.Tensor, generator: torch.Generator, method_state: dict[str, Any] | None = None) -> LoopState:
    """The loop state before iteration 0: the initial images, the generator as it is now and the
    method's initial state (what :meth:`Method.init_state` created, as :meth:`Method.state_dict`)."""
    return LoopState(0, syn_init.detach().clone(), {}, generator.get_state(), [], _detached_copy(method_state or {}))


def state_from_checkpoint(payload: dict[str, Any], device: torch.device) -> LoopState:
    """The loop state a checkpoint holds, with its tensors on ``device``."""
    return LoopState(
        iteration=int(payload["iteration"]),
        syn=payload["syn"].to(device),
        optimizer_state=_to_device(payload["optimizer"], device),
        generator_state=payload["generator"],
        loss_curve=[list(p) for p in payload["loss_curve"]],
        method_state=_to_device(payload.get("method_state") or {}, device),
    )


def rebuild_method(payload: dict[str, Any], spec: DataSpec, device: torch.device) -> Method:
    """The method a checkpoint was made with, rebuilt from its name and hyper-parameters."""
    return method_class(payload["method"])(Hyperparameters(**payload["hyperparameters"]), spec, device)


def _detached_copy(value: Any) -> Any:
    """A copy of nested dicts/lists whose tensors are detached clones (later updates leave it alone)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _detached_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_detached_copy(v) for v in value]
    return copy.deepcopy(value)


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
    classes : the class ids this process computes (``None``: all). Every process still draws the
        real batches and augmentation parameters of *every* class, so the generator advances the
        same way whichever classes it owns, and shards of one run agree with a single process.
    group : the torchrun process group (:mod:`medcondense.distributed`; ``None``: one process).
        With several ranks, each iteration ends with one tiny all-reduce (loss, non-finite flag,
        stop flag), so every rank stops at the same iteration on Ctrl-C/SIGTERM or a NaN; the
        synthetic set is combined (each row from the rank owning its class) before
        :meth:`Method.between_updates` and for checkpoints and the result, which rank 0 writes.
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
        classes: list[int] | None = None,
        group: Any = None,
    ):
        from medcondense import distributed

        self.group = group or distributed.SINGLE
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
        num_classes = method.spec.num_classes
        owned = list(range(num_classes)) if classes is None else sorted({int(c) for c in classes})
        if not owned or owned[0] < 0 or owned[-1] >= num_classes:
            raise ConfigError(f"classes {classes!r}: expected a non-empty subset of 0..{num_classes - 1}")
        self.classes = owned
        method.classes = owned
        method.sampler = sampler
        owned_set = set(owned)
        #: rows of the synthetic tensor whose class this process computes
        self.owned_rows = torch.tensor([int(c) in owned_set for c in syn_labels.tolist()], dtype=torch.bool)
        self._stop_requested = False

    def _save(self, state: LoopState) -> None:
        """Write ``state`` as the checkpoint; with several ranks a collective: every rank
        contributes its classes' rows, rank 0 writes, then all wait for the file."""
        if self.checkpoint is None:
            return
        if self.group.active:
            state = self.combined(state)
            if not self.group.is_main:
                self.group.barrier("writing the checkpoint")
                return
        try:
            save_checkpoint(self.checkpoint, state, self.hp, self.run_key, self.source_hash, self.config)
        finally:
            if self.group.active:
                self.group.barrier("writing the checkpoint")
        log.debug("checkpoint at iteration %d: %s", state.iteration, self.checkpoint)

    def combined(self, state: LoopState) -> LoopState:
        """``state`` with every row of the images and of the optimizer's momentum taken from the
        rank that owns its class (a collective; ``state`` itself when there is one process)."""
        if not self.group.active:
            return state
        syn = self.group.combine_rows(state.syn.detach().clone(), self.owned_rows, "combining the synthetic set")
        optimizer_state = copy.deepcopy(state.optimizer_state)
        for slot in (optimizer_state.get("state") or {}).values():
            buffer = slot.get("momentum_buffer") if isinstance(slot, dict) else None
            if isinstance(buffer, torch.Tensor) and buffer.shape == syn.shape:
                slot["momentum_buffer"] = self.group.combine_rows(buffer.clone(), self.owned_rows, "combining the optimizer state")
        return LoopState(state.iteration, syn, optimizer_state, state.generator_state, state.loss_curve, state.method_state)

    # -- loop -----------------------------------------------------------------------------
    def run(self, state: LoopState, progress: Any = None) -> LoopState:
        """Run the remaining outer iterations from ``state``; return the final state.

        The method's own state is loaded from ``state.method_state`` first (when it holds any),
        and every returned or checkpointed state carries :meth:`Method.state_dict`.

        Raises
        ------
        RuntimeFailure
            The loss became NaN/Inf (the last good state is kept as the checkpoint), or the
            method raised it (e.g. from :meth:`Method.after_step`; the checkpoint is kept too).
        Interrupted
            Ctrl-C; the last completed iteration is saved as the checkpoint first.
        """
        hp, method = self.hp, self.method
        syn = state.syn.detach().clone().requires_grad_(True)
        optimizer = torch.optim.SGD([syn], lr=hp.lr_img, momentum=hp.momentum_img)
        if state.optimizer_state:
            optimizer.load_state_dict(state.optimizer_state)
        if state.method_state:
            method.load_state_dict(_detached_copy(state.method_state))
        generator = torch.Generator().set_state(state.generator_state)
        good = state.snapshot()
        with self._stop_flag_on_signals():
            return self._loop(state, good, syn, optimizer, generator, progress)

    def _loop(self, state: LoopState, good: LoopState, syn: torch.Tensor, optimizer: torch.optim.Optimizer,
              generator: torch.Generator, progress: Any) -> LoopState:
        hp, method = self.hp, self.method
        try:
            for it in range(state.iteration, hp.iterations + 1):
                loss = self._iteration(it, syn, optimizer, generator)
                curve = good.loss_curve + [[it, loss]]
                good = LoopState(it + 1, syn, optimizer.state_dict(), generator.get_state(), curve,
                                 method.state_dict()).snapshot()
                if progress is not None:
                    progress.advance()
                    progress.update(status=f"loss {loss:.4f}")
                if self.checkpoint_every and (it + 1) % self.checkpoint_every == 0 and it < hp.iterations:
                    self._save(good)
                if self.hooks.after_iteration is not None:
                    self.hooks.after_iteration(it, loss)
        except _Stop:
            self._save(good)
            where = f"; checkpoint kept at {self.checkpoint} (rerun with --resume)" if self.checkpoint else ""
            raise Interrupted(f"interrupted after iteration {good.iteration - 1} on every rank{where}") from None
        except KeyboardInterrupt:
            if self.group.active:  # this rank alone (outside the flag's reach): no collective save
                raise Interrupted(f"rank {self.group.rank} interrupted after iteration {good.iteration - 1}") from None
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
        except RuntimeFailure as failure:
            if self.group.active:
                raise  # a failure of this rank alone: the others cannot join a collective save
            self._save(good)
            if self.checkpoint:
                failure.message = f"{failure.message}; kept the checkpoint of iteration {good.iteration - 1} at {self.checkpoint}"
            raise
        except torch.OutOfMemoryError:
            if not self.group.active:
                self._save(good)
            raise RuntimeFailure(
                f"out of device memory at iteration {good.iteration} ({self.method.device})",
                hint=f"lower --batch-real (now {hp.batch_real}), use --batch-classes off, or a smaller --ipc (now {hp.ipc})",
            ) from None
        return self.combined(good)

    @contextmanager
    def _stop_flag_on_signals(self) -> Iterator[None]:
        """With several ranks, SIGINT/SIGTERM only set a flag that the next per-iteration
        all-reduce carries, so every rank stops after the same iteration (and the checkpoint
        write is not cut by torchrun forwarding the signal). One process: unchanged."""
        import signal
        import threading

        if not self.group.active or threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if not self._stop_requested:
                log.warning("signal %d: stopping every rank after the current iteration", signum)
            self._stop_requested = True

        previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            yield
        finally:
            if not self._stop_requested:  # after a stop, a late forwarded signal must not cut the exit short
                signal.signal(signal.SIGINT, previous[0])
                signal.signal(signal.SIGTERM, previous[1])

    def _iteration(self, it: int, syn: torch.Tensor, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
        """One outer iteration; returns the mean loss per class and update (as the reference logs it)."""
        hp, method = self.hp, self.method
        sharded = self.group.active
        torch.manual_seed(hp.seed + it)  # the iteration's fresh network: identical after resume
        state = method.begin_iteration(generator)
        total = 0.0
        bad_value: float | None = None
        updates = method.updates_per_iteration
        for step in range(updates):
            optimizer.zero_grad(set_to_none=True)
            try:
                if method.writes_own_gradients:
                    value = float(method.backward(state, syn, generator))
                    if not torch.isfinite(torch.tensor(value)):
                        raise _NonFinite(it, value)
                else:
                    value = self._loss_backward(it, state, syn, generator)
            except _NonFinite as bad:
                if not sharded:
                    raise
                # the other ranks learn it from the all-reduce below; until then keep in step
                bad_value = bad.value if bad_value is None else bad_value
                value = 0.0
            optimizer.step()
            method.after_step(state)
            total += value
            if step < updates - 1:
                if sharded:  # the network trains on the whole synthetic set: every class's rows
                    with torch.no_grad():
                        syn.copy_(self.group.combine_rows(syn.detach().clone(), self.owned_rows))
                method.between_updates(state, syn.detach(), self.syn_labels, generator)
        images_bad = not bool(torch.isfinite(syn.detach()[self.owned_rows.to(syn.device)]).all())
        if sharded:
            total, bad_count, stops = self.group.all_reduce_values(
                [total, float(bad_value is not None or images_bad), float(self._stop_requested)])
            if bad_count:
                raise _NonFinite(it, bad_value if bad_value is not None else float("nan"))
            if stops:
                raise _Stop()
        elif images_bad:  # a finite loss can still blow up the images
            raise _NonFinite(it, float("nan"))
        per = method.spec.num_classes if method.loss_per_class else 1
        return total / (per * updates)

    def _loss_backward(self, it: int, state: Any, syn: torch.Tensor, generator: torch.Generator) -> float:
        """Draw the step's real batches and augmentation parameters (for every class), compute
        the loss of the owned classes and back-propagate it into ``syn.grad``; returns its value."""
        hp, method = self.hp, self.method
        num_classes = method.spec.num_classes
        if method.uses_real_batches:
            real = [self.sampler.sample(c, hp.batch_real, generator) for c in range(num_classes)]
            aug = [self.augmenter.sample(generator) for _ in range(num_classes)]
        else:
            real, aug = [], [None] * num_classes
        syn_by_class = list(syn.split(hp.ipc))
        owned = self.classes
        loss = method.loss(state, [real[c] for c in owned] if real else [], [syn_by_class[c] for c in owned],
                           [aug[c] for c in owned])
        value = float(loss.detach())
        if not torch.isfinite(torch.tensor(value)):
            raise _NonFinite(it, value)
        loss.backward()
        return value


class _Stop(Exception):
    """Every rank agreed to stop after a signal (SIGINT/SIGTERM) reached at least one of them."""


class _NonFinite(Exception):
    def __init__(self, iteration: int, value: float):
        super().__init__(f"non-finite loss {value} at iteration {iteration}")
        self.iteration = iteration
        self.value = value
