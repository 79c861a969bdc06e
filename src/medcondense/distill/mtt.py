"""Trajectory matching (MTT) as pure functions over a flat parameter vector.

MTT (Cazenavette et al., CVPR 2022) starts a student network at an expert's snapshot
``theta_s``, takes ``N`` SGD steps on (augmented minibatches of) the synthetic images with a
learnable step size ``lr``, and scores the end point against the expert ``M`` epochs later::

    theta_{k+1} = theta_k - lr * grad_theta CE(f(theta_k, aug_k(syn[idx_k])), y[idx_k])
    loss        = ||theta_N - theta_{s+M}||^2 / ||theta_s - theta_{s+M}||^2

Two ways to differentiate ``loss`` with respect to the images and ``lr``:

* :func:`unroll_loss` keeps every step's graph (``create_graph=True``) and lets autograd go
  back through all of them, as the reference ``distill.py`` does. Memory grows with ``N``.
* :func:`walk_gradients` keeps only ``theta_0 .. theta_N`` (plain tensors) and each step's
  minibatch indices and augmentation parameters, then walks backwards, rebuilding one step's
  graph at a time. With ``a_k = dloss/dtheta_k`` and ``g_k`` the step's gradient::

      a_N        = 2 (theta_N - theta_target) / ||theta_s - theta_target||^2
      dloss/dlr += -<g_k, a_{k+1}>
      dloss/dsyn += -lr * (d g_k / d syn)^T a_{k+1}
      a_k        = a_{k+1} - lr * (d g_k / d theta_k)^T a_{k+1}

  Both vector-Jacobian products come from one ``autograd.grad`` of ``<g_k, a_{k+1}>``. This is
  the same gradient as the unroll (the same terms, summed in another order), not an
  approximation: unlike TESLA it keeps the ``d g_k / d theta_k`` terms that link one step to
  the next. Memory is one step's graph plus ``N + 1`` parameter vectors.

The network enters only through ``forward(theta, x) -> logits`` (see :func:`functional_forward`,
which uses ``torch.func.functional_call`` on any ``nn.Module``), so the math is testable on a
tiny float64 net. Augmentation parameters are drawn once per step (:func:`sample_steps`) and
replayed exactly when the walk rebuilds a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from medcondense.distill.base import Method

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a module's parameters in ``named_parameters()`` order (the flat layout)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> list[int]:
        out = []
        for shape in self.shapes:
            n = 1
            for d in shape:
                n *= d
            out.append(n)
        return out

    @property
    def size(self) -> int:
        """Total number of parameters (the length of a flat vector)."""
        return sum(self.numels)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """The module's parameters as one flat detached vector."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` by parameter name (differentiable)."""
        pieces = flat.split(self.numels)
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}


def functional_forward(module: nn.Module) -> Forward:
    """``forward(theta, x)``: ``module`` evaluated with the flat parameters ``theta``.

    Uses :func:`torch.func.functional_call`, so ``theta`` may carry a graph (second order).
    """
    layout = ParamLayout.of(module)

    def forward(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, layout.unflatten(theta), (x,))

    return forward


@dataclass
class StudentStep:
    """What one student step used: which synthetic images and which augmentation draw."""

    indices: torch.Tensor  # long [batch]
    aug: Any = None  # an AugParams (one op, one draw per image) or None


def sample_steps(
    num_images: int, syn_steps: int, batch_syn: int, aug_ops: list[str], generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> list[StudentStep]:
    """Draw every step's minibatch and augmentation, in the reference's order.

    As in the reference ``distill.py``: when the queue of minibatches is empty, shuffle all
    synthetic images and split them into chunks of ``batch_syn``; each step takes the *last*
    chunk. Augmentation is the reference's DSA with ``seed=-1``: one op per step, one draw per
    image. All draws come from ``generator`` (so a resumed run draws the same).
    """
    from medcondense.augment import sample_params

    steps: list[StudentStep] = []
    chunks: list[torch.Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            order = torch.randperm(num_images, generator=generator)
            chunks = list(order.split(batch_syn))
        idx = chunks.pop()
        aug = sample_params(aug_ops, generator, device, per_sample=len(idx)) if aug_ops else None
        steps.append(StudentStep(idx.to(device), aug))
    return steps


def _step_inputs(syn: torch.Tensor, labels: torch.Tensor, step: StudentStep) -> tuple[torch.Tensor, torch.Tensor]:
    idx = step.indices.to(syn.device)
    x = syn[idx]
    if step.aug is not None:
        from medcondense.augment import apply_aug

        x = apply_aug(x, step.aug)
    return x, labels[idx]


def _step_gradient(forward: Forward, theta: torch.Tensor, syn: torch.Tensor, labels: torch.Tensor,
                   step: StudentStep, create_graph: bool) -> torch.Tensor:
    """``grad_theta CE`` of one student step (with a graph when ``create_graph``)."""
    x, y = _step_inputs(syn, labels, step)
    ce = F.cross_entropy(forward(theta, x), y)
    return torch.autograd.grad(ce, theta, create_graph=create_graph)[0]


def _normalized_distance(theta_end: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, denominator): ``||end - target||^2 / ||start - target||^2``.

    The reference divides both sums by the parameter count first; that cancels.
    """
    denominator = ((start - target) ** 2).sum()
    return ((theta_end - target) ** 2).sum() / denominator, denominator


def unroll_loss(
    forward: Forward, syn: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
    start: torch.Tensor, target: torch.Tensor, steps: list[StudentStep],
) -> torch.Tensor:
    """The MTT loss with every step's graph kept (the reference's way): call ``.backward()`` on it.

    ``syn`` and ``lr`` should require grad; ``start``/``target`` are expert snapshots (constants).
    """
    theta = start.detach().clone().requires_grad_(True)
    for step in steps:
        theta = theta - lr * _step_gradient(forward, theta, syn, labels, step, create_graph=True)
    loss, _ = _normalized_distance(theta, start, target)
    return loss


@dataclass
class WalkResult:
    """The loss and its exact gradients from :func:`walk_gradients`."""

    loss: float
    syn_grad: torch.Tensor
    lr_grad: torch.Tensor


def forward_trajectory(
    forward: Forward, syn: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
    start: torch.Tensor, steps: list[StudentStep],
) -> list[torch.Tensor]:
    """``theta_0 .. theta_N`` as plain tensors (first-order passes only, no graph kept)."""
    syn = syn.detach()
    lr_value = lr.detach()
    thetas = [start.detach().clone()]
    for step in steps:
        theta = thetas[-1].requires_grad_(True)
        grad = _step_gradient(forward, theta, syn, labels, step, create_graph=False)
        thetas[-1] = theta.detach()
        thetas.append((theta.detach() - lr_value * grad).detach())
    return thetas


def walk_gradients(
    forward: Forward, syn: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
    start: torch.Tensor, target: torch.Tensor, steps: list[StudentStep],
) -> WalkResult:
    """The MTT loss and its exact gradients for the images and the step size, in memory that
    does not grow with the number of steps (beyond ``N + 1`` parameter vectors).

    See the module docstring for the recursion. Nothing here sets ``.grad``; the caller does.
    """
    syn_leaf = syn.detach().requires_grad_(True)
    lr_value = lr.detach()
    thetas = forward_trajectory(forward, syn_leaf, labels, lr_value, start, steps)
    start = start.detach()
    target = target.detach()
    loss, denominator = _normalized_distance(thetas[-1], start, target)
    adjoint = 2.0 * (thetas[-1] - target) / denominator  # dloss/dtheta_N
    syn_grad = torch.zeros_like(syn_leaf)
    lr_grad = torch.zeros((), dtype=lr_value.dtype, device=lr_value.device)
    for k in range(len(steps) - 1, -1, -1):
        theta = thetas[k].clone().requires_grad_(True)
        grad = _step_gradient(forward, theta, syn_leaf, labels, steps[k], create_graph=True)
        lr_grad = lr_grad - (grad.detach() * adjoint).sum()
        inner = (grad * adjoint).sum()
        d_theta, d_syn = torch.autograd.grad(inner, (theta, syn_leaf), allow_unused=True)
        if d_syn is not None:
            syn_grad = syn_grad - lr_value * d_syn
        adjoint = adjoint - lr_value * d_theta
        del grad, inner, d_theta, d_syn, theta
        thetas[k + 1] = None  # type: ignore[call-overload]  # no longer needed: free it early
    return WalkResult(float(loss), syn_grad, lr_grad.reshape(lr.shape))


# =========================================================================== the method


@dataclass(frozen=True)
class MTTDefaults:
    """One row of hyper-parameters (``batch_syn`` None = all synthetic images in every step)."""

    syn_steps: int
    expert_epochs: int
    max_start_epoch: int
    lr_img: float
    lr_lr: float
    lr_teacher: float
    zca: bool = False
    batch_syn: int | None = None


#: The author's table (mtt-distillation readme.md at commit 50dccea, CIFAR-10 rows: 10 classes,
#: 32 px, ConvNet depth 3, our closest setting), by images per class. IPC 10's pixel learning rate
#: is 1000: the table's value is a typo the author confirmed (mtt-distillation issue #31). The rows
#: marked ``zca`` were run on ZCA-whitened images, which medcondense does not do (docs/distill.md).
IPC_TABLE: dict[int, MTTDefaults] = {
    1: MTTDefaults(syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_img=1000.0, lr_lr=1e-7, lr_teacher=0.01, zca=True),
    10: MTTDefaults(syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01, zca=True),
    50: MTTDefaults(syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_img=1000.0, lr_lr=1e-5, lr_teacher=0.01, zca=False),
}

#: The seed study's values (hrlblab/ImageDistillation README, PathMNIST IPC 1; it used ZCA).
MEDMNIST = MTTDefaults(syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_img=1000.0, lr_lr=1e-6, lr_teacher=0.01, zca=True)

#: Expert settings and iterations per preset: (num_experts, train_epochs, iterations). The
#: reference trains 100 experts for 50 epochs and distils for 5000 iterations.
PRESET_BUDGET: dict[str, tuple[int, int, int]] = {"quick": (3, 8, 10), "paper": (100, 50, 5000), "medmnist": (100, 50, 5000)}

#: quick: a smoke-sized trajectory window that fits the minutes budget on 2 CPU cores
QUICK_WINDOW = {"syn_steps": 5, "expert_epochs": 2, "max_start_epoch": 5}

UNROLL_MODES = ("walk", "full")


def defaults_for_ipc(ipc: int) -> MTTDefaults:
    """The table row of ``ipc``; other IPCs take the nearest row (with a warning)."""
    import logging

    if ipc in IPC_TABLE:
        return IPC_TABLE[ipc]
    nearest = min(IPC_TABLE, key=lambda k: (abs(k - ipc), k))
    logging.getLogger(__name__).warning(
        "IPC %d is not in the MTT table (1, 10, 50); using IPC %d's settings %s (set --syn-steps, "
        "--expert-epochs, --max-start-epoch, --lr-img, --lr-lr to choose)", ipc, nearest, IPC_TABLE[nearest])
    return IPC_TABLE[nearest]


def resolve_settings(config: Any, ipc: int) -> dict[str, Any]:
    """MTT's own settings (``Hyperparameters.extra``): explicit options, else the preset, else the table.

    Raises ConfigError for a window the experts cannot hold
    (``max_start_epoch + expert_epochs > train_epochs + 1``) and for bad values.
    """
    from medcondense.errors import ConfigError

    preset = config.preset
    row = MEDMNIST if preset == "medmnist" else defaults_for_ipc(ipc)
    num_experts, train_epochs, _ = PRESET_BUDGET[preset]
    window = dict(QUICK_WINDOW) if preset == "quick" else {
        "syn_steps": row.syn_steps, "expert_epochs": row.expert_epochs, "max_start_epoch": row.max_start_epoch}

    def pick(name: str, fallback: Any) -> Any:
        value = getattr(config, name, None)
        return fallback if value is None else value

    extra = {
        "syn_steps": pick("syn_steps", window["syn_steps"]),
        "expert_epochs": pick("expert_epochs", window["expert_epochs"]),
        "max_start_epoch": pick("max_start_epoch", window["max_start_epoch"]),
        "lr_lr": float(pick("lr_lr", row.lr_lr)),
        "lr_teacher": float(pick("lr_teacher", row.lr_teacher)),
        "batch_syn": pick("batch_syn", row.batch_syn),
        "num_experts": pick("num_experts", num_experts),
        "train_epochs": pick("train_epochs", train_epochs),
        "unroll": pick("unroll", "walk"),
        "batch_train": 256,
        "table_row": "medmnist" if preset == "medmnist" else f"ipc{min(IPC_TABLE, key=lambda k: (abs(k - ipc), k))}",
    }
    experts_file = getattr(config, "experts", None)
    if experts_file:
        # A given expert file decides the expert settings; its key goes into the run key.
        from medcondense.distill.experts import read_experts_attrs

        attrs = read_experts_attrs(experts_file)
        stored = attrs.get("settings") or {}
        for name in ("num_experts", "train_epochs"):
            asked = getattr(config, name, None)
            if asked is not None and asked != stored.get(name):
                raise ConfigError(f"--{name.replace('_', '-')} {asked} differs from the given experts' {stored.get(name)}", path=experts_file)
            extra[name] = stored.get(name)
        extra["experts_key"] = attrs.get("key")
    for name, low in (("syn_steps", 0), ("expert_epochs", 1), ("max_start_epoch", 1), ("num_experts", 1), ("train_epochs", 1)):
        value = extra[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"--{name.replace('_', '-')} {value!r}: expected a whole number >= {low}")
    if extra["batch_syn"] is not None and (isinstance(extra["batch_syn"], bool) or not isinstance(extra["batch_syn"], int) or extra["batch_syn"] < 1):
        raise ConfigError(f"--batch-syn {extra['batch_syn']!r}: expected a whole number >= 1")
    for name in ("lr_lr", "lr_teacher"):
        if not (extra[name] > 0 and extra[name] < float("inf")):
            raise ConfigError(f"--{name.replace('_', '-')} {extra[name]!r}: expected a positive number")
    if extra["unroll"] not in UNROLL_MODES:
        raise ConfigError(f"--unroll {extra['unroll']!r}: expected one of {', '.join(UNROLL_MODES)}")
    if extra["max_start_epoch"] + extra["expert_epochs"] > extra["train_epochs"] + 1:
        raise ConfigError(
            f"--max-start-epoch {extra['max_start_epoch']} + --expert-epochs {extra['expert_epochs']} needs experts of at least "
            f"{extra['max_start_epoch'] + extra['expert_epochs'] - 1} epochs; --train-epochs is {extra['train_epochs']}"
        )
    return extra


class MTTMethod(Method):
    """Matching Training Trajectories on the engine (``--method mtt``).

    Uses no real batches (the experts carry the real data); writes the images' gradients itself
    (the walk, or autograd through the full unroll with ``--unroll full``); owns the learnable
    step size and its SGD (momentum 0.5, ``--lr-lr``) as method state, checkpointed with the run.
    Every draw (expert, start epoch, minibatches, augmentation) comes from the engine's generator.
    """

    name = "mtt"
    default_lr_img = 1000.0
    preset_iterations = {name: budget[2] for name, budget in PRESET_BUDGET.items()}
    preset_batch_real = {name: 0 for name in PRESET_BUDGET}  # no real batches
    uses_augmentation = True
    uses_real_batches = False
    writes_own_gradients = True
    #: torchrun (docs/distributed.md): the loop is refused with exit 2 (splitting would need a
    #: gradient all-reduce over each student step's minibatch); --experts-only is split
    class_shards_refusal = ("one expert trajectory couples all classes in every student step, so its classes "
                            "cannot be split; build the experts on several processes with --experts-only "
                            "(they go round-robin over the ranks), then distil as one process")
    loss_per_class = False

    def __init__(self, hp: Any, spec: Any, device: torch.device):
        super().__init__(hp, spec, device)
        self.settings = dict(hp.extra)
        self.experts: Any = None  # an experts.Experts, attached by prepare()
        self.experts_key: str | None = None
        net = self.build_net()
        net.train()
        self._forward = functional_forward(net)
        self.layout = ParamLayout.of(net)
        self.syn_lr: torch.Tensor | None = None
        self.lr_optimizer: torch.optim.Optimizer | None = None
        self._last_draw: dict[str, int] = {}

    # -- resolution -----------------------------------------------------------------------
    @classmethod
    def resolve(cls, config: Any, device: torch.device, laterality: bool) -> Any:
        """The common resolution, then MTT's meaning of ``--compile``.

        MTT's only first-order network passes are the experts' training (the walk differentiates
        a gradient and stays eager float32, like DC's synthetic pass), so ``hp.compile`` is the
        experts' switch: ``on`` compiles their training forward, ``off`` and ``auto`` do not
        (auto: the gain of compiling a training pass on a CPU is not measured yet; docs/distill.md).
        """
        hp = super().resolve(config, device, laterality)
        hp.compile = config.compile == "on"
        return hp

    @classmethod
    def refine(cls, hp: Any, config: Any, device: torch.device) -> Any:
        """Per-IPC (or medmnist) defaults; ``--lr-img`` defaults to the table's pixel learning rate."""
        extra = resolve_settings(config, hp.ipc)
        if config.lr_img is None:
            row = MEDMNIST if config.preset == "medmnist" else defaults_for_ipc(hp.ipc)
            hp.lr_img = float(row.lr_img)
        hp.batch_real = 0
        hp.extra = {**hp.extra, **extra}
        return hp

    # -- state ----------------------------------------------------------------------------
    def _make_step_size(self, value: torch.Tensor) -> None:
        self.syn_lr = value.detach().clone().to(self.device).requires_grad_(True)
        self.lr_optimizer = torch.optim.SGD([self.syn_lr], lr=self.settings["lr_lr"], momentum=0.5)

    def init_state(self, syn: torch.Tensor, generator: torch.Generator) -> None:
        """The step size starts at ``--lr-teacher`` (as the reference's ``syn_lr``)."""
        self._make_step_size(torch.tensor(self.settings["lr_teacher"], dtype=torch.float32))

    def state_dict(self) -> dict[str, Any]:
        if self.syn_lr is None or self.lr_optimizer is None:
            return {}
        return {"syn_lr": self.syn_lr.detach().clone(), "lr_optimizer": self.lr_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from medcondense.errors import ConfigError

        if "syn_lr" not in state:
            raise ConfigError("checkpoint holds no MTT step size; delete it to start over")
        self._make_step_size(state["syn_lr"])
        assert self.lr_optimizer is not None
        self.lr_optimizer.load_state_dict(state["lr_optimizer"])

    @property
    def learned_lr(self) -> float | None:
        """The current step size (what evaluate trains the set at)."""
        return None if self.syn_lr is None else float(self.syn_lr.detach())

    # -- experts --------------------------------------------------------------------------
    def expert_settings(self) -> Any:
        """The expert settings this run asks for (what keys the cached file)."""
        from medcondense.distill.experts import ExpertSettings

        s = self.settings
        return ExpertSettings(num_experts=s["num_experts"], train_epochs=s["train_epochs"], lr_teacher=s["lr_teacher"],
                              batch_train=s["batch_train"], aug=tuple(self.hp.aug), net=dict(self.hp.net),
                              seed=self.hp.seed, amp=self.hp.amp)

    def prepare(self, context: Any) -> dict[str, Any]:
        """Open ``--experts PATH``, or the cached experts of this input and settings, or build them."""
        import logging
        from pathlib import Path

        from medcondense.distill.experts import build_experts, default_experts_path, experts_key, open_experts

        log = logging.getLogger(__name__)
        names, shapes = list(self.layout.names), [list(s) for s in self.layout.shapes]
        given = getattr(context.config, "experts", None)
        built = False
        if given:
            path = Path(given)
            experts = open_experts(path, source_hash=context.source_hash, parameter_names=names, parameter_shapes=shapes)
            log.info("using the expert trajectories %s (%d experts x %d epochs)", path, experts.num_experts, experts.num_epochs)
        else:
            settings = self.expert_settings()
            key = experts_key(context.source_hash, settings)

            def locate() -> tuple[Path, bool]:
                where = default_experts_path(context.input, key, context.output)
                return where, where.exists()

            # rank 0 decides where the file goes and whether it is there (under torchrun)
            path, present = self.group.on_main(locate, "locating the expert file")
            if not present:
                log.info("training %d expert(s) for %d epochs into %s%s", settings.num_experts, settings.train_epochs, path,
                         f", round-robin over {self.group.world_size} processes" if self.group.active else "")
                total = settings.num_experts
                build = lambda bar: build_experts(  # noqa: E731
                    path, context.images, context.labels, self.spec.num_classes, settings, key=key,
                    source_hash=context.source_hash, class_names=context.class_names, progress=bar,
                    compile=self.hp.compile, group=self.group)
                if context.progress is not None and self.group.is_main:
                    with context.progress("mtt experts", total) as bar:
                        build(bar)
                else:
                    build(None)
                built = True
            else:
                log.info("reusing the expert trajectories %s", path)
            if self.group.active:  # --experts-only: rank 0 reads the file it wrote; no loop follows
                return self.group.on_main(lambda: self._facts(open_experts(
                    path, source_hash=context.source_hash, parameter_names=names, parameter_shapes=shapes), key, path, built),
                    "reading the expert file")
            experts = open_experts(path, source_hash=context.source_hash, parameter_names=names, parameter_shapes=shapes)
            self._check_key(experts, key, path)
        self.attach_experts(experts)
        return self._facts(experts, self.experts_key, path, built)

    @staticmethod
    def _check_key(experts: Any, key: str, path: Any) -> None:
        if experts.attrs.get("key") != key:
            from medcondense.errors import ConfigError

            raise ConfigError("an expert file of other settings holds this file name; move it away", path=path)

    def _facts(self, experts: Any, key: str | None, path: Any, built: bool) -> dict[str, Any]:
        """What the stage's result says about the experts."""
        if key is not None and self.experts is None:
            self._check_key(experts, key, path)
        loss, accuracy = experts.curves()
        return {"experts": {
            "path": str(path), "key": str(experts.attrs.get("key")), "built": built, "num_experts": experts.num_experts,
            "train_epochs": experts.num_epochs,
            "final_train_accuracy": round(float(accuracy[:, -1].mean()), 4) if accuracy.size else None,
        }}

    def attach_experts(self, experts: Any) -> None:
        """Use these expert trajectories (checked against this run's network and window)."""
        from medcondense.errors import ConfigError

        need = self.settings["max_start_epoch"] + self.settings["expert_epochs"] - 1
        if experts.num_epochs < need:
            raise ConfigError(
                f"the experts have {experts.num_epochs} epochs; --max-start-epoch {self.settings['max_start_epoch']} + "
                f"--expert-epochs {self.settings['expert_epochs']} needs {need}", path=experts.path)
        if experts.num_parameters != self.layout.size:
            raise ConfigError(f"the experts have {experts.num_parameters} parameters, this network {self.layout.size}", path=experts.path)
        self.experts = experts
        self.experts_key = str(experts.attrs.get("key"))

    # -- one iteration --------------------------------------------------------------------
    def backward(self, state: Any, syn: torch.Tensor, generator: torch.Generator) -> float:
        """Draw an expert, a start epoch and the student steps; set ``syn.grad`` and the step size's grad."""
        from medcondense.errors import ConfigError

        if self.experts is None or self.syn_lr is None:
            raise RuntimeError("MTTMethod.backward before attach_experts()/init_state()")
        if len(self.classes) != self.spec.num_classes:
            raise ConfigError("--method mtt matches whole trajectories and cannot be split by class")
        s = self.settings
        expert = int(torch.randint(self.experts.num_experts, (1,), generator=generator))
        start_epoch = int(torch.randint(s["max_start_epoch"], (1,), generator=generator))
        self._last_draw = {"expert": expert, "start_epoch": start_epoch}
        start = self.experts.snapshot(expert, start_epoch).to(self.device)
        target = self.experts.snapshot(expert, start_epoch + s["expert_epochs"]).to(self.device)
        labels = torch.arange(self.spec.num_classes, device=self.device).repeat_interleave(self.hp.ipc)
        n = syn.shape[0]
        steps = sample_steps(n, s["syn_steps"], s["batch_syn"] or n, list(self.hp.aug), generator, self.device)
        if s["unroll"] == "full":
            self.syn_lr.grad = None
            loss = unroll_loss(self._forward, syn, labels, self.syn_lr, start, target, steps)
            loss.backward()
            return float(loss.detach())
        result = walk_gradients(self._forward, syn, labels, self.syn_lr, start, target, steps)
        syn.grad = result.syn_grad.to(syn.dtype)
        self.syn_lr.grad = result.lr_grad.detach().reshape(self.syn_lr.shape)
        return result.loss

    def after_step(self, state: Any) -> None:
        """Step the step size's optimizer; stop when it is no longer a positive finite number."""
        from medcondense.errors import RuntimeFailure

        assert self.lr_optimizer is not None and self.syn_lr is not None
        if self.syn_lr.grad is not None:
            self.lr_optimizer.step()
            self.syn_lr.grad = None
        value = float(self.syn_lr.detach())
        if not (value > 0 and value < float("inf")):
            raise RuntimeFailure(
                f"the learned step size became {value} (expert {self._last_draw.get('expert')}, "
                f"start epoch {self._last_draw.get('start_epoch')})",
                hint=f"lower --lr-lr (now {self.settings['lr_lr']}) or --lr-img (now {self.hp.lr_img})",
            )

    def output_attrs(self) -> dict[str, Any]:
        """What the synthetic file records: the learned step size and the experts' key."""
        return {"learned_lr": self.learned_lr, "experts_key": self.experts_key}
