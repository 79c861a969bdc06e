"""Expert trajectories for MTT: ConvNets trained on the real train split, a snapshot per epoch.

Training follows the reference ``buffer.py`` (GeorgeCazenavette/mtt-distillation): a fresh
ConvNet, SGD at ``lr_teacher`` (0.01) without momentum or weight decay, batches of 256, DSA on
every batch with one draw per image (the reference's ``DiffAugment`` with ``seed=-1``), and the
flat parameter vector kept at initialization and after every epoch.

The file (schema ``medcondense-experts/1``, docs/format.md) holds

* ``/trajectories`` float32 ``[experts, epochs + 1, parameters]``, one chunk per snapshot (so
  reading the two snapshots an MTT iteration needs touches two chunks),
* ``/train_loss`` and ``/train_accuracy`` float32 ``[experts, epochs]``,
* root attributes: ``schema``, ``kind="experts"``, ``key``, ``source_hash``, ``settings``,
  ``parameter_names``, ``parameter_shapes``, ``num_parameters``, ``class_names``,
  ``image_shape``, ``provenance``.

The key is a digest of the input's content hash and every setting that changes the
trajectories, so all IPCs of one data set share one file and a changed setting or input builds a
new one. ``amp`` is in the key (bfloat16 changes the numbers); ``--compile`` is not: it only
reschedules the same float32 (or bf16) arithmetic, the compiled and eager trajectories agree
within float rounding (``tests/distill/test_mtt_pipeline.py`` checks it on a tiny set), so a
compiled build and an eager one are interchangeable, as two machines' builds are. Whether each
expert went through the compiler is recorded in ``provenance.compiled`` instead.

Writing is atomic expert by expert: each finished expert goes to
``<file>.parts/expert_NNNNN.h5`` (atomically), an interrupted build resumes from the experts it
has, and the final file is assembled (atomically) when all are done. Each expert draws from its
own seeded generator, so a resumed build is bit-identical to an uninterrupted one.

Expert files hold networks trained on real data: export, evaluate and merge refuse them
(``store.read`` says why), so they do not travel with a synthetic set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from medcondense import store
from medcondense.atomic import atomic_path
from medcondense.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from medcondense.distill.accelerate import MaybeCompiled

log = logging.getLogger(__name__)

EXPERTS_SCHEMA = store.EXPERTS_SCHEMA
EXPERTS_KIND = "experts"
#: attributes stored as plain strings; every other attribute is JSON (store.py's convention, so
#: store.read recognizes an expert file and refuses it with a clear message)
PLAIN_ATTRS = ("schema", "kind", "source_hash")
PARTS_SUFFIX = ".parts"


@dataclass(frozen=True)
class ExpertSettings:
    """Everything that changes the trajectories (part of the key).

    Not ``compile``: it changes the kernels, not the arithmetic (see the module docstring).
    """

    num_experts: int
    train_epochs: int
    lr_teacher: float = 0.01
    batch_train: int = 256
    aug: tuple[str, ...] = ()
    net: dict[str, Any] = field(default_factory=lambda: {"name": "convnet", "width": 128, "depth": 3, "norm": "instancenorm"})
    seed: int = 0
    amp: str = "off"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["aug"] = list(self.aug)
        return out


def experts_key(source_hash: str, settings: ExpertSettings) -> str:
    """sha256 of the input's content hash, the settings and the schema (canonical JSON)."""
    text = json.dumps({"schema": EXPERTS_SCHEMA, "source": source_hash, "settings": settings.to_dict()},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def default_experts_path(input_path: str | Path, key: str, output: str | Path | None = None) -> Path:
    """``<input>.experts/<key[:16]>.h5``; beside the output when the input's folder is read-only."""
    input_path = Path(input_path)
    name = f"{key[:16]}.h5"
    folder = input_path.with_name(input_path.name + ".experts")
    if _writable_folder(folder):
        return folder / name
    if output is not None:
        output = Path(output)
        fallback = output.with_name(input_path.name + ".experts")
        log.warning("cannot write beside the input (%s is read-only); expert trajectories go to %s", input_path.parent, fallback)
        return fallback / name
    return folder / name


def _writable_folder(folder: Path) -> bool:
    if folder.exists():
        return os.access(folder, os.W_OK)
    return os.access(folder.parent, os.W_OK)


# --------------------------------------------------------------------------- reading


@dataclass
class Experts:
    """An open expert file: settings, layout and lazy access to snapshots."""

    path: Path
    attrs: dict[str, Any]
    num_experts: int
    num_epochs: int  # training epochs; snapshots are 0..num_epochs
    num_parameters: int

    def snapshot(self, expert: int, epoch: int) -> torch.Tensor:
        """The flat parameters of ``expert`` after ``epoch`` epochs (0 = initialization)."""
        import h5py

        if not (0 <= expert < self.num_experts and 0 <= epoch <= self.num_epochs):
            raise IndexError(f"snapshot ({expert}, {epoch}) outside {self.num_experts} experts x {self.num_epochs + 1} snapshots")
        with h5py.File(self.path, "r") as f:
            return torch.from_numpy(np.asarray(f["trajectories"][expert, epoch], dtype=np.float32))

    def curves(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-epoch train loss and accuracy, ``[experts, epochs]`` each."""
        import h5py

        with h5py.File(self.path, "r") as f:
            return np.asarray(f["train_loss"]), np.asarray(f["train_accuracy"])


def read_experts_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes of an expert file (JSON decoded); StoreError when it is not one."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise StoreError("no such expert file", path=path)
    try:
        with h5py.File(path, "r") as f:
            raw = dict(f.attrs)
    except OSError:
        raise StoreError("not an HDF5 file", path=path) from None
    attrs: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if name in PLAIN_ATTRS or not isinstance(value, str):
            attrs[name] = value
            continue
        try:
            attrs[name] = json.loads(value)
        except json.JSONDecodeError:
            raise StoreError(f"attribute {name!r} is not valid JSON", path=path) from None
    if attrs.get("schema") != EXPERTS_SCHEMA:
        raise StoreError(f"not an expert trajectory file (schema {attrs.get('schema')!r}, expected {EXPERTS_SCHEMA})", path=path)
    return attrs


def open_experts(
    path: str | Path, *, source_hash: str | None = None, parameter_names: list[str] | None = None,
    parameter_shapes: list[list[int]] | None = None,
) -> Experts:
    """Open an expert file and check it fits this run.

    Raises
    ------
    StoreError
        Not an expert file, or damaged.
    ConfigError
        Trained on another input (content hash), or for another network (parameter layout).
    """
    import h5py

    path = Path(path)
    attrs = read_experts_attrs(path)
    if source_hash is not None and attrs.get("source_hash") != source_hash:
        raise ConfigError(
            "these expert trajectories were trained on another input (content hash differs); "
            "build them from this input (drop --experts) or pass the matching input", path=path,
        )
    if parameter_names is not None and (list(attrs.get("parameter_names", [])) != list(parameter_names)
                                        or [list(s) for s in attrs.get("parameter_shapes", [])] != [list(s) for s in parameter_shapes or []]):
        raise ConfigError(
            f"these expert trajectories are for another network ({len(attrs.get('parameter_names', []))} tensors, "
            f"{attrs.get('num_parameters')} parameters); use the same architecture settings", path=path,
        )
    try:
        with h5py.File(path, "r") as f:
            shape = f["trajectories"].shape
    except (OSError, KeyError):
        raise StoreError("damaged expert file (no /trajectories)", path=path) from None
    return Experts(path, attrs, int(shape[0]), int(shape[1]) - 1, int(shape[2]))


# --------------------------------------------------------------------------- training


@dataclass
class BuildHooks:
    """Callbacks; tests use ``after_expert`` to interrupt a build."""

    after_expert: Callable[[int], None] | None = None


def expert_seed(seed: int, expert: int) -> int:
    """The seed of one expert (its initialization and its batches), independent of the others."""
    digest = hashlib.sha256(f"medcondense-expert:{seed}:{expert}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def expert_step_loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, amp: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training forward of one expert batch: ``(cross-entropy, logits)``.

    The first-order pass ``--amp`` and ``--compile`` apply to (bf16 autocast inside, so a compiled
    graph includes it; the loss in float32). A module-level function taking the network as an
    argument, so every expert of a build reuses one compiled graph.
    """
    from medcondense.distill.accelerate import autocast

    with autocast(x.device, amp):
        logits = net(x)
    return F.cross_entropy(logits.float(), y), logits


def expert_forward(compile: bool) -> "MaybeCompiled":
    """:func:`expert_step_loss`, through ``torch.compile`` when ``compile`` (eager with one
    warning when the compiler is missing or fails, as the other methods' passes)."""
    from medcondense.distill.accelerate import MaybeCompiled

    return MaybeCompiled(expert_step_loss, compile)


def train_expert(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, settings: ExpertSettings, expert: int,
    forward: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train one expert as the reference ``buffer.py`` does.

    ``forward`` is the batch's training forward (:func:`expert_forward`; eager
    :func:`expert_step_loss` by default). Returns ``(trajectory [epochs + 1, P] float32,
    loss [epochs], accuracy [epochs])``.
    """
    from medcondense.augment import apply_aug, sample_params
    from medcondense.nets import build_net

    forward = forward or expert_step_loss
    device = images.device
    seed = expert_seed(settings.seed, expert)
    net_cfg = dict(settings.net)
    name = net_cfg.pop("name")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net(name, images.shape[1], num_classes, images.shape[-1], **net_cfg).to(device)
    net.train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=settings.lr_teacher, momentum=0.0, weight_decay=0.0)
    ops = list(settings.aug)
    snapshots = [_flat(net)]
    losses, accuracies = [], []
    n = images.shape[0]
    for _ in range(settings.train_epochs):
        order = torch.randperm(n, generator=generator).to(device)
        total_loss, correct = 0.0, 0
        for start in range(0, n, settings.batch_train):
            idx = order[start : start + settings.batch_train]
            x, y = images[idx], labels[idx]
            if ops:
                x = apply_aug(x, sample_params(ops, generator, device, per_sample=len(idx)))
            loss, logits = forward(net, x, y, settings.amp)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y).sum())
        losses.append(total_loss / n)
        accuracies.append(correct / n)
        snapshots.append(_flat(net))
        if not np.isfinite(losses[-1]):
            raise ConfigError(f"expert {expert} diverged (loss {losses[-1]}); lower --lr-teacher (now {settings.lr_teacher})")
    return np.stack(snapshots), np.asarray(losses, np.float32), np.asarray(accuracies, np.float32)


def _flat(net: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).float().cpu().numpy()


def parts_folder(path: Path) -> Path:
    """Where finished experts wait until the file is assembled."""
    return path.with_name(path.name + PARTS_SUFFIX)


def part_path(path: Path, expert: int) -> Path:
    return parts_folder(path) / f"expert_{expert:05d}.h5"


def write_part(part: Path, key: str, trajectory: np.ndarray, loss: np.ndarray, accuracy: np.ndarray,
               compiled: bool = False) -> None:
    """One finished expert, atomically; ``compiled``: its training forward ran through torch.compile."""
    import h5py

    with atomic_path(part) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            f.create_dataset("trajectory", data=trajectory, track_times=False)
            f.create_dataset("train_loss", data=loss, track_times=False)
            f.create_dataset("train_accuracy", data=accuracy, track_times=False)
            f.attrs["key"] = key
            f.attrs["compiled"] = bool(compiled)


def _part_compiled(part: Path) -> bool:
    """Whether a finished expert was trained through torch.compile (False for older parts)."""
    import h5py

    try:
        with h5py.File(part, "r") as f:
            return bool(f.attrs.get("compiled", False))
    except OSError:
        return False


def _read_part(part: Path, key: str, epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A finished expert, or None when the part is missing, damaged or from another key."""
    import h5py

    if not part.is_file():
        return None
    try:
        with h5py.File(part, "r") as f:
            stored = f.attrs.get("key")
            stored = stored.decode() if isinstance(stored, bytes) else stored
            if stored != key or f["trajectory"].shape[0] != epochs + 1:
                return None
            return np.asarray(f["trajectory"]), np.asarray(f["train_loss"]), np.asarray(f["train_accuracy"])
    except (OSError, KeyError):
        return None


def build_experts(
    path: str | Path, images: torch.Tensor, labels: torch.Tensor, num_classes: int, settings: ExpertSettings,
    *, key: str, source_hash: str, class_names: list[str], progress: Any = None, hooks: BuildHooks | None = None,
    compile: bool = False, group: Any = None,
) -> Path:
    """Train the experts that are not yet done and assemble the expert file at ``path``.

    ``images`` are the standardized real train images; ``compile`` sends each batch's training
    forward through ``torch.compile`` (one compiled graph for all experts; not part of the key).
    Returns ``path``.

    Under torchrun (``group`` with several ranks) the experts still to train go round-robin over
    the ranks (on a fresh build expert ``e`` on rank ``e % W``), a round of ``W`` at a time; rank 0
    gathers each round's trajectories and alone writes the parts and the file. Each expert draws
    only from its own seed (:func:`expert_seed`), so the file is the one a single process builds.
    """
    from medcondense import distributed
    from medcondense.nets import build_net

    path = Path(path)
    hooks = hooks or BuildHooks()
    group = group or distributed.SINGLE
    net_cfg = dict(settings.net)
    name = net_cfg.pop("name")
    probe = build_net(name, images.shape[1], num_classes, images.shape[-1], **net_cfg)
    names = [n for n, _ in probe.named_parameters()]
    shapes = [list(p.shape) for p in probe.parameters()]
    started = time.time()
    forward = expert_forward(compile)
    finished = group.on_main(lambda: [_read_part(part_path(path, e), key, settings.train_epochs) is not None
                                      for e in range(settings.num_experts)], "looking for finished experts")
    pending = [e for e, ok in enumerate(finished) if not ok]
    done = settings.num_experts - len(pending)
    if progress is not None and done:
        progress.advance(done)
    for first in range(0, len(pending), group.world_size):
        round_ = pending[first : first + group.world_size]
        mine = round_[group.rank] if group.rank < len(round_) else None
        trained = group.gather(_train_one(images, labels, num_classes, settings, mine, group, forward),
                               "gathering expert trajectories")
        group.on_main(lambda: _write_round(path, key, settings, round_, trained, progress, hooks), "writing expert trajectories")
    if done:
        log.info("resumed the expert build: %d of %d experts were already trained", done, settings.num_experts)

    def finish() -> None:
        assemble(path, key, settings, source_hash, class_names, names, shapes, images, started)
        shutil.rmtree(parts_folder(path), ignore_errors=True)

    group.on_main(finish, "assembling the expert file")
    return path


def _train_one(images: torch.Tensor, labels: torch.Tensor, num_classes: int, settings: ExpertSettings,
               expert: int | None, group: Any, forward: Any = None) -> tuple[str, Any] | None:
    """This rank's expert of a round as ``("ok", (trajectory, loss, accuracy, seconds, compiled))``
    (``compiled``: its forward ran through torch.compile; MaybeCompiled may have fallen back); with
    several ranks a usage error travels as ``("error", (class name, message, path, hint))`` so
    rank 0 reports it for every rank. ``None`` when this rank has no expert in the round."""
    from medcondense.errors import MedcondenseError

    if expert is None:
        return None
    t0 = time.time()
    try:
        trajectory, loss, accuracy = train_expert(images, labels, num_classes, settings, expert, forward)
    except MedcondenseError as exc:
        if not group.active:
            raise
        return ("error", (type(exc).__name__, exc.message, exc.path, exc.hint))
    compiled = forward is not None and forward.compiled is not None
    return ("ok", (trajectory, loss, accuracy, time.time() - t0, compiled))


def _write_round(path: Path, key: str, settings: ExpertSettings, experts: list[int], trained: list[Any],
                 progress: Any, hooks: BuildHooks) -> None:
    """Rank 0: write each finished expert of a round as its part (atomically), then raise the
    first error a rank reported (the parts written stay for the next try)."""
    from medcondense import distributed

    failure = None
    for expert, outcome in zip(experts, trained):
        kind, payload = outcome
        if kind == "error":
            failure = failure or payload
            continue
        trajectory, loss, accuracy, seconds, compiled = payload
        # MaybeCompiled drops to eager for good when the compiler fails: what ran is what is recorded
        write_part(part_path(path, expert), key, trajectory, loss, accuracy, compiled=compiled)
        final = float(accuracy[-1]) if len(accuracy) else float("nan")
        log.info("expert %d/%d: %d epochs in %.1f s, final train accuracy %.3f",
                 expert + 1, settings.num_experts, settings.train_epochs, seconds, final)
        if progress is not None:
            progress.advance()
            progress.update(status=f"expert {expert + 1}: train acc {0 if np.isnan(final) else final:.3f}")
        if hooks.after_expert is not None:
            hooks.after_expert(expert)
    if failure is not None:
        raise distributed.reported_error(failure)


def assemble(
    path: Path, key: str, settings: ExpertSettings, source_hash: str, class_names: list[str],
    names: list[str], shapes: list[list[int]], images: torch.Tensor, started: float,
) -> None:
    """Copy the finished experts into one file (atomically), one chunk per snapshot."""
    import h5py

    from medcondense import __version__

    num_params = int(sum(int(np.prod(s)) for s in shapes))
    e_count, epochs = settings.num_experts, settings.train_epochs
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            traj = f.create_dataset("trajectories", shape=(e_count, epochs + 1, num_params), dtype="float32",
                                    chunks=(1, 1, num_params), track_times=False)
            loss_ds = f.create_dataset("train_loss", shape=(e_count, epochs), dtype="float32", track_times=False)
            acc_ds = f.create_dataset("train_accuracy", shape=(e_count, epochs), dtype="float32", track_times=False)
            compiled = []
            for e in range(e_count):
                part = _read_part(part_path(path, e), key, epochs)
                if part is None:
                    raise StoreError(f"expert {e} vanished while assembling; rerun to rebuild it", path=part_path(path, e))
                traj[e] = part[0]
                loss_ds[e] = part[1]
                acc_ds[e] = part[2]
                compiled.append(_part_compiled(part_path(path, e)))
            attrs = {
                "schema": EXPERTS_SCHEMA, "kind": EXPERTS_KIND, "key": key, "source_hash": source_hash,
                "settings": settings.to_dict(), "parameter_names": names, "parameter_shapes": shapes,
                "num_parameters": num_params, "class_names": list(class_names),
                "image_shape": [int(s) for s in images.shape[1:]],
                "provenance": {"tool": f"medcondense {__version__}", "torch": torch.__version__,
                               "device": str(images.device), "wall_time_s": round(time.time() - started, 3),
                               # per expert: trained through torch.compile (a resumed build may mix)
                               "compiled": compiled},
            }
            for name, value in attrs.items():
                f.attrs[name] = value if name in PLAIN_ATTRS else json.dumps(value, sort_keys=True)
