"""Running a stage on several processes with torchrun (torch.distributed): the process group.

``torchrun --nproc_per_node W -m medcondense distill|evaluate ...`` starts W copies of the
stage; torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. With ``WORLD_SIZE > 1`` a stage
first checks its options on every rank (so a usage error gives exit 2 on every rank without any
communication), then joins the process group with :func:`join`: NCCL with ``cuda:$LOCAL_RANK``
on GPUs, gloo on the CPU. Without torchrun (or with one rank) nothing here starts anything and
:func:`current` is a one-process :class:`Group` whose collectives are no-ops.

Rules every distributed stage follows (docs/distributed.md):

* rank 0 alone writes outputs, checkpoints and caches, prints stdout and progress bars and
  decides "up to date"; :meth:`Group.on_main` runs such a step on rank 0 and hands its outcome
  (a value, or the same error, so every rank exits with the same code) to every rank;
* every collective has a timeout, ``MEDCONDENSE_DIST_TIMEOUT`` seconds (default 600), and a
  failed collective (a rank died, or the timeout passed) becomes
  :class:`~medcondense.errors.RuntimeFailure` with a clear message, never a hang.

This module imports torch only inside functions, so the CLI can read the world size cheaply.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, TypeVar

from medcondense import errors
from medcondense.errors import ConfigError, RuntimeFailure

log = logging.getLogger(__name__)

TIMEOUT_ENV = "MEDCONDENSE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
#: the stages that can run under torchrun with several ranks
DISTRIBUTED_STAGES = ("distill", "evaluate")

T = TypeVar("T")


# --------------------------------------------------------------------------- environment


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r}: expected a whole number (set by torchrun)") from None


def world_size() -> int:
    """``WORLD_SIZE`` from torchrun (1 without torchrun)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def env_rank() -> int:
    """``RANK`` from torchrun (0 without torchrun)."""
    return _env_int("RANK", 0)


def local_rank() -> int:
    """``LOCAL_RANK`` from torchrun: this process's index on its node (selects its GPU)."""
    return _env_int("LOCAL_RANK", 0)


def timeout_seconds() -> float:
    """The collectives' timeout: ``MEDCONDENSE_DIST_TIMEOUT`` seconds, default 600."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={value!r}: expected a positive number of seconds")
    return seconds


def rank_prefix() -> str:
    """``[rank r] `` for the log lines of ranks other than 0 under torchrun, else empty."""
    try:
        rank = env_rank()
        return f"[rank {rank}] " if world_size() > 1 and rank != 0 else ""
    except ConfigError:
        return ""  # the stage reports the bad variable


def is_main_process() -> bool:
    """True on rank 0 (and without torchrun): the process that writes and prints."""
    try:
        return world_size() == 1 or env_rank() == 0
    except ConfigError:
        return True


def check_stage(stage: str) -> None:
    """Refuse a stage that cannot run on several ranks (its ranks would write the same output)."""
    if world_size() > 1 and stage not in DISTRIBUTED_STAGES:
        raise ConfigError(
            f"{stage} does not run under torchrun with several processes (WORLD_SIZE={world_size()}); "
            f"run it as one process (only {' and '.join(DISTRIBUTED_STAGES)} split their work)"
        )


def resolve_device(name: str = "auto"):
    """The stage's ``torch.device``: :func:`medcondense.device.resolve_device` for one process;
    under torchrun ``cuda:$LOCAL_RANK`` for ``auto`` (with CUDA) or ``cuda``, ``cpu`` for ``cpu``.

    Raises ConfigError for ``cuda:N`` with several ranks (each rank takes its own GPU) and when
    the node has fewer GPUs than ranks.
    """
    from medcondense.device import resolve_device as resolve_one

    world = world_size()
    if world == 1:
        return resolve_one(name)
    import torch

    device = resolve_one(name)  # validates the name and CUDA's presence
    if device.type == "cpu":
        return device
    if name not in ("auto", "cuda"):
        raise ConfigError(
            f"--device {name} with {world} processes: each rank uses cuda:$LOCAL_RANK; "
            "pass --device cuda (or auto), and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    index = local_rank()
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {index} but only {torch.cuda.device_count()} CUDA device(s) on this node; "
            "start at most one process per GPU (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", index)


# --------------------------------------------------------------------------- the group


class Group:
    """This process's view of the process group: rank, size and the few collectives stages use.

    With ``world_size == 1`` every collective returns its input (no torch.distributed call).
    """

    def __init__(self, rank: int = 0, size: int = 1, backend: str | None = None, device: Any = None):
        self.rank = rank
        self.world_size = size
        self.backend = backend
        #: where collective tensors live (cuda:LOCAL_RANK for NCCL, the CPU for gloo)
        self.device = device

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What provenance records: world size and backend."""
        return {"world_size": self.world_size, "backend": self.backend}

    def owner(self, index: int) -> int:
        """The rank that owns item ``index`` of a round-robin split."""
        return index % self.world_size

    def mine(self, count: int) -> list[int]:
        """The items ``0..count-1`` this rank owns (round-robin)."""
        return [i for i in range(count) if i % self.world_size == self.rank]

    # -- collectives (each wrapped: a dead rank or a timeout is a clear error) ------------------
    def _collective(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as exc:  # gloo/NCCL raise RuntimeError or DistBackendError subclasses
            raise RuntimeFailure(
                f"rank {self.rank}: lost contact with the other ranks during {what} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})",
                hint=f"another rank failed or died (see its error above), or waited longer than "
                     f"{TIMEOUT_ENV}={timeout_seconds():g} s",
            ) from None

    def all_reduce_sum(self, tensor: Any, what: str = "an all-reduce") -> Any:
        """Sum ``tensor`` over the ranks, in place, and return it."""
        if not self.active:
            return tensor
        import torch.distributed as dist

        moved = tensor.to(self.device)
        self._collective(what, lambda: dist.all_reduce(moved))
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def all_reduce_values(self, values: list[float], what: str = "the per-iteration all-reduce") -> list[float]:
        """Sum a few floats over the ranks (float64)."""
        if not self.active:
            return list(values)
        import torch

        tensor = torch.tensor(values, dtype=torch.float64)
        return [float(v) for v in self.all_reduce_sum(tensor, what).tolist()]

    def combine_rows(self, tensor: Any, owned_rows: Any, what: str = "combining the synthetic set") -> Any:
        """Every rank gets, in each row, the value of the rank that owns the row (exact: the
        other ranks add zeros). ``owned_rows`` is a bool tensor over the first dimension."""
        if not self.active:
            return tensor
        import torch

        mask = owned_rows.to(tensor.device).view(-1, *([1] * (tensor.dim() - 1)))
        mine = torch.where(mask, tensor, torch.zeros((), dtype=tensor.dtype, device=tensor.device))
        return self.all_reduce_sum(mine.contiguous(), what)

    def broadcast(self, obj: Any, what: str = "a broadcast from rank 0") -> Any:
        """Rank 0's ``obj`` on every rank (pickled)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        self._collective(what, lambda: dist.broadcast_object_list(box, src=0, device=self._object_device()))
        return box[0]

    def all_gather(self, obj: Any, what: str = "gathering results") -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (pickled)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        self._collective(what, lambda: dist.all_gather_object(out, obj))
        return out

    def gather(self, obj: Any, what: str = "gathering results at rank 0") -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0 (pickled); ``None`` on the other ranks.

        Cheaper than :meth:`all_gather` for large objects only rank 0 needs (MTT's expert
        trajectories): nothing travels to the other ranks."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        self._collective(what, lambda: dist.gather_object(obj, out, dst=0))
        return out

    def barrier(self, what: str = "a barrier") -> None:
        if not self.active:
            return
        import torch.distributed as dist

        kwargs = {"device_ids": [self.device.index]} if self.backend == "nccl" else {}
        self._collective(what, lambda: dist.barrier(**kwargs))

    def _object_device(self) -> Any:
        return self.device if self.backend == "nccl" else None

    # -- rank 0 does it, every rank learns the outcome ----------------------------------------
    def on_main(self, step: Callable[[], T], what: str) -> T | None:
        """Run ``step`` on rank 0 only; every rank returns its value or raises its error.

        Errors travel as (class name, message, path, hint): a :class:`MedcondenseError` becomes
        the same class on every rank, so every rank exits with the same code; AlreadyDone too;
        Ctrl-C on rank 0 becomes Interrupted; anything else RuntimeFailure (exit 1).
        """
        if not self.active:
            return step()
        outcome: tuple[str, Any]
        if self.is_main:
            try:
                outcome = ("ok", step())
            except errors.AlreadyDone as done:
                outcome = ("done", (done.path, done.result))
            except errors.MedcondenseError as exc:
                outcome = ("error", (type(exc).__name__, exc.message, exc.path, exc.hint))
            except KeyboardInterrupt:
                outcome = ("error", ("Interrupted", f"rank 0 was interrupted during {what}", None, None))
            except Exception as exc:
                outcome = ("error", ("RuntimeFailure", f"rank 0 failed during {what}: {type(exc).__name__}: {exc}", None, None))
            shared = self.broadcast(outcome, f"{what} (rank 0 reporting)")
            if outcome[0] != "ok":
                raise _rebuild(shared)
            return outcome[1]
        shared = self.broadcast(None, f"{what} (waiting for rank 0)")
        return _unpack(shared)


def reported_error(report: tuple[str, str, Any, Any]) -> BaseException:
    """The error another rank reported as ``(class name, message, path, hint)``, rebuilt as the
    same :class:`MedcondenseError` class (so every rank exits with the same code)."""
    return _rebuild(("error", report))


def _unpack(outcome: tuple[str, Any]) -> Any:
    if outcome[0] == "ok":
        return outcome[1]
    raise _rebuild(outcome)


def _rebuild(outcome: tuple[str, Any]) -> BaseException:
    kind, payload = outcome
    if kind == "done":
        path, result = payload
        return errors.AlreadyDone(path, result)
    name, message, path, hint = payload
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.MedcondenseError)) or name == "ShapeMismatch":
        cls = errors.ConfigError if name == "ShapeMismatch" else errors.RuntimeFailure
    return cls(message, path=path, hint=hint)


SINGLE = Group()
_current: dict[str, Group] = {"group": SINGLE}


def current() -> Group:
    """The group this process joined (:data:`SINGLE` without torchrun)."""
    return _current["group"]


def join(device: Any) -> Group:
    """Join the process group when ``WORLD_SIZE > 1`` (NCCL for a CUDA device, else gloo).

    Call it after every option check, so a usage error never leaves a rank waiting here.
    """
    if _current["group"].active or world_size() == 1:
        return _current["group"]
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    timeout = timedelta(seconds=timeout_seconds())
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend, collective_device = "nccl", device
        kwargs: dict[str, Any] = {"device_id": device}
    else:
        backend, collective_device, kwargs = "gloo", torch.device("cpu"), {}
    try:
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    except Exception as exc:
        raise RuntimeFailure(
            f"could not join the process group ({backend}): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="start the stage with torchrun, which sets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE",
        ) from None
    group = Group(dist.get_rank(), dist.get_world_size(), backend, collective_device)
    _current["group"] = group
    log.debug("joined the process group: rank %d of %d (%s)", group.rank, group.world_size, backend)
    return group


def leave() -> None:
    """Leave the process group (end of a stage); a no-op without one."""
    group = _current["group"]
    _current["group"] = SINGLE
    if not group.active:
        return
    import torch.distributed as dist

    try:
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # leaving must not turn a result into an error
        log.debug("destroy_process_group failed", exc_info=True)
