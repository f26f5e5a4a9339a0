"""Training under torchrun: the process group, this process's rank, and the few collectives the
engine needs. Outside torchrun (no WORLD_SIZE in the environment, or WORLD_SIZE=1) every helper
here is a no-op: rank 0 of a world of 1.

torchrun starts one process per device and sets RANK, LOCAL_RANK, WORLD_SIZE and the
rendezvous address; `session()` joins the group (gloo on the CPU, NCCL on CUDA) with a timeout,
so a rank that dies makes the others fail after it instead of waiting for ever. The engine then
wraps what trains in DistributedDataParallel, gives each rank its share of every global batch
(`take_share`), agrees on stopping (`agree`), sums the epoch's running totals, averages
BatchNorm statistics at the end of each epoch (unless SyncBatchNorm keeps them in step), and
lets only rank 0 print and write.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from cnnkit.errors import CnnkitError

T = TypeVar("T")


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that prints, writes the run folder and saves checkpoints."""
    return rank() == 0


def backend() -> str:
    return dist.get_backend() if active() else "none"


def launched_rank() -> int:
    """The rank torchrun gave this process (0 without torchrun), known before and after the
    process group exists (the CLI's last lines come from rank 0 only)."""
    return int(os.environ.get("RANK", "0"))


def launched() -> bool:
    """Whether torchrun (or another launcher setting WORLD_SIZE) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: torch.device) -> torch.device:
    """This process's device: on CUDA, the GPU of its LOCAL_RANK (one process per GPU), made
    the current one."""
    if device.type != "cuda" or not launched():
        return device
    index = int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise CnnkitError(
            f"process {index} on this node has no GPU of its own ({torch.cuda.device_count()} "
            "visible): give torchrun --nproc-per-node at most the number of GPUs"
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@contextlib.contextmanager
def session(device: torch.device, timeout_minutes: float) -> Iterator[None]:
    """Join torchrun's process group for the block (no-op outside torchrun, or when a group
    already exists, which the caller then owns)."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield
        return
    if not dist.is_available():
        raise CnnkitError("this torch build has no torch.distributed; train in one process")
    global _patient
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        # this process's GPU before the first collective: object collectives on NCCL use the
        # current device, and every rank on cuda:0 would fail as "duplicate GPU"
        local_device(device)
    timeout = datetime.timedelta(minutes=timeout_minutes)
    try:
        dist.init_process_group(backend=backend, timeout=timeout)
        # waits for rank 0's own work (loading a large dataset into memory, writing its
        # cache) may outlast the timeout meant for a dead rank: a gloo group of their own
        _patient = dist.new_group(backend="gloo", timeout=datetime.timedelta(days=7))
    except (RuntimeError, ValueError) as exc:
        raise CnnkitError(f"could not join torchrun's process group ({first_line(exc)})") from None
    finished = False
    try:
        yield
        finished = True
    finally:
        if finished:
            dist.barrier()  # no rank leaves (and makes torchrun stop the others) before all do
        _patient = None
        dist.destroy_process_group()


def first_line(exc: BaseException) -> str:
    """The error's first line, without the C++ source location gloo and NCCL put first."""
    text = re.sub(r"\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", str(exc)).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def is_communication_error(exc: BaseException) -> bool:
    """A collective that failed because another rank died or timed out."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    words = ("gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout")
    return isinstance(exc, RuntimeError) and any(word in text for word in words)


# ---- collectives -------------------------------------------------------------------------------
def _control_device() -> torch.device:
    """Where small control tensors live: NCCL only reduces CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(values: list[float]) -> list[float]:
    """The element-wise maximum over the ranks (every rank gets the same list): a stop flag
    raised on any rank, a signal number, a time limit reached anywhere."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_control_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_values(values: dict[str, float]) -> dict[str, float]:
    """Each named number summed over the ranks (every rank must pass the same names)."""
    if not active() or not values:
        return values
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64, device=_control_device())
    dist.all_reduce(t)
    return dict(zip(names, t.tolist(), strict=True))


_patient: Any = None  # session()'s gloo group without a practical timeout


def broadcast(value: T | None, patient: bool = False) -> T:
    """Rank 0's `value` (any picklable object) on every rank; `patient`: the others wait for
    it without the process group's timeout (rank 0 may be loading data for an hour)."""
    if not active():
        return value  # type: ignore[return-value]
    box = [value]
    group = _patient if patient else None
    dist.broadcast_object_list(box, src=0, group=group)
    return box[0]  # type: ignore[return-value]


def gather(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not active():
        return [value]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def main_first(work: Callable[[], T]) -> T:
    """Run `work` on rank 0 first (it may write caches the others then read), then on the
    others; an error on rank 0 reaches every rank as the same one line instead of a hang."""
    if not active():
        return work()
    if is_main():
        try:
            result = work()
        except CnnkitError as exc:
            broadcast(str(exc), patient=True)
            raise
        except BaseException:
            broadcast("rank 0 failed; see its error above", patient=True)
            raise
        broadcast(None, patient=True)
        return result
    error = broadcast(None, patient=True)
    if error is not None:
        raise CnnkitError(error)
    return work()


def decided_by_main(work: Callable[[], T]) -> T:
    """`work()` run on rank 0 only, its result (or its error line) given to every rank."""
    if not active():
        return work()
    result: Any = None
    if is_main():
        try:
            result = ("ok", work())
        except CnnkitError as exc:
            broadcast(("error", str(exc)), patient=True)
            raise
        except BaseException:
            broadcast(("error", "rank 0 failed; see its error above"), patient=True)
            raise
    outcome = broadcast(result, patient=True)
    if outcome[0] == "error":
        raise CnnkitError(outcome[1])
    return outcome[1]


# ---- the training data and the model -----------------------------------------------------------
def take_share(batch: Any, index: int, parts: int) -> Any:
    """Rank `index`'s contiguous slice of a global batch: every tensor, list and tuple in it
    split along its first dimension into `parts` near-equal pieces (torch.tensor_split's)."""
    if isinstance(batch, torch.Tensor):
        return torch.tensor_split(batch, parts)[index]
    if isinstance(batch, tuple):
        return tuple(take_share(item, index, parts) for item in batch)
    if isinstance(batch, list):
        bounds = torch.tensor_split(torch.arange(len(batch)), parts)[index]
        return batch[int(bounds[0]) : int(bounds[-1]) + 1] if len(bounds) else []
    raise TypeError(f"cannot split a batch of {type(batch).__name__} across processes")


def batch_length(batch: Any) -> int:
    """The number of samples in a batch (the first tensor's or list's length)."""
    if isinstance(batch, tuple):
        return batch_length(batch[0])
    return len(batch)


def sharded(
    make_batches: Callable[[torch.Generator], Any], min_share: int = 2
) -> Callable[[torch.Generator], Iterator[Any]]:
    """This rank's part of every global batch that `make_batches` yields. Every rank draws the
    same global order (the same generator), so step k's parts together are the global batch k;
    a batch too small to give every rank `min_share` samples is dropped on every rank."""
    index, parts = rank(), world_size()

    def make(generator: torch.Generator) -> Iterator[Any]:
        for batch in make_batches(generator):
            if batch_length(batch) < parts * min_share:
                continue
            yield take_share(batch, index, parts)

    return make


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (BatchNorm's running mean and variance) over the
    ranks: each rank measured them on its own share of the data."""
    if not active():
        return
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).double() for b in buffers])
    if dist.get_backend() == "nccl":
        flat = flat.cuda()
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for b in buffers:
        n = b.numel()
        b.copy_(flat[offset : offset + n].view_as(b).to(b.dtype))
        offset += n


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Average the gradients of an optimiser's parameters over the ranks in one all-reduce:
    what DDP does after backward, for networks DDP cannot wrap (a GAN's discriminator runs
    three times a step, once frozen, which DDP's one-forward-one-backward contract forbids)."""
    if not active():
        return
    grads = [
        p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
    ]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel over the module's trainable parameters. Buffers are not
    broadcast every step: BatchNorm statistics are averaged at each epoch's end instead (or
    kept in step by SyncBatchNorm)."""
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # torch 2.14 renamed the option; older releases (>= 2.5 supported) know the old name only
    sync = "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
    no_sync = {"forward_sync_buffers" if sync else "broadcast_buffers": False}
    return ddp(module, device_ids=ids, **no_sync)


# ---- evaluation --------------------------------------------------------------------------------
_sharding_evaluation = False


@contextlib.contextmanager
def sharded_evaluation() -> Iterator[None]:
    """Inside the block, `evaluation_share` splits an evaluation across the ranks: the engine
    opens it around the evaluations that every rank runs together (validation, the test)."""
    global _sharding_evaluation
    previous, _sharding_evaluation = _sharding_evaluation, active()
    try:
        yield
    finally:
        _sharding_evaluation = previous


def evaluation_share(n: int) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous share of n evaluation samples (all of them
    outside a sharded evaluation). The shares cover every sample exactly once: no padding."""
    if not _sharding_evaluation:
        return 0, n
    base, extra = divmod(n, world_size())
    r = rank()
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def gather_rows(part: torch.Tensor) -> torch.Tensor:
    """The ranks' shares (from `evaluation_share`) concatenated in rank order, on every rank;
    the tensor itself outside a sharded evaluation."""
    if not _sharding_evaluation:
        return part
    parts = [p for p in gather(part.cpu()) if p.numel()]  # a rank may have had no share
    return torch.cat(parts) if parts else part.cpu()
