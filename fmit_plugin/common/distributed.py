"""
PyTorch's own distributed engine, as launched by `torchrun`: process group set-up and helpers.

Ranks: `rank()` is the *global* rank (0 .. world_size - 1 over every node) and decides who writes
files and which shard of the data a worker reads; LOCAL_RANK (the rank on this node, set by
`torchrun`) only picks the GPU. Nothing here assumes a single node.
"""
import contextlib
import contextvars
import os
from collections.abc import Iterable, Iterator
from typing import Any, Optional, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# Inside `this_worker_only()`, metrics report this worker's own counts instead of gathering them.
_THIS_WORKER_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("fmit_this_worker_only", default=False)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """The global rank (over all nodes)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_primary() -> bool:
    """Only the primary worker (global rank 0) writes checkpoints, metrics, logs and the archive."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_from_environment() -> bool:
    """Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL on GPUs, gloo on CPUs. Returns whether this call
    created the process group (`False` when not distributed or already initialised)."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        # Before the process group, so NCCL's communicator lives on this worker's GPU.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")
    return True


def destroy() -> None:
    if is_distributed():
        dist.destroy_process_group()


def local_device() -> torch.device:
    """This worker's device in a distributed run: the GPU numbered LOCAL_RANK on its node, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _collective_device() -> torch.device:
    # NCCL reduces only CUDA tensors; gloo takes CPU tensors.
    return local_device() if dist.get_backend() == "nccl" else torch.device("cpu")


def local_cuda_device(cuda_device: int) -> int:
    """The `cuda_device` a command runs on: in a distributed run this worker's GPU (LOCAL_RANK) or
    -1 on CPUs, whatever was asked; alone, `cuda_device` itself."""
    if not is_distributed():
        return cuda_device
    device = local_device()
    return -1 if device.type == "cpu" else int(device.index or 0)


def describe_worker() -> str:
    """"worker rank R of W", from torchrun's environment (still right once the group is gone)."""
    return f"worker rank {os.environ.get('RANK', '0')} of {os.environ.get('WORLD_SIZE', '1')}"


class WorkerLost(RuntimeError):
    """A collective call failed: another worker died or left (torchrun's report names its rank)."""


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as error:  # torch's DistBackendError and gloo's socket errors are RuntimeErrors
        raise WorkerLost(
            f"{describe_worker()}: the other workers stopped answering while {what} (one of them failed or was "
            f"killed: torchrun's report above names its rank): {error}"
        ) from error


def share(count: int) -> range:
    """This worker's share of `count` items numbered 0 .. count - 1: every `world_size`-th one from
    its rank (round-robin), so every item has exactly one worker and shares differ by one at most.
    All of them when alone."""
    return range(rank(), count, world_size())


def sum_across_workers(*values: float) -> list[float]:
    """Element-wise sums over all workers (for loss totals); the values themselves when alone."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    with _collective("summing counts"):
        dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_object(value: Any) -> list[Any]:
    """Every worker's `value`, in rank order (a one-element list when alone)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    with _collective("gathering results"):
        dist.all_gather_object(gathered, value)
    return gathered


def gather_to_primary(value: T, what: str = "gathering results") -> Optional[list[T]]:
    """Every worker's `value` in rank order on the primary worker (`None` on the others): results
    travel through the process group, so nodes need not share a filesystem."""
    if not is_distributed():
        return [value]
    gathered: Optional[list[Any]] = [None] * world_size() if is_primary() else None
    with _collective(what):
        dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast_from_primary(value: T) -> T:
    """The primary worker's `value` on every worker."""
    if not is_distributed():
        return value
    holder: list[Any] = [value]
    with _collective("waiting for the primary worker"):
        dist.broadcast_object_list(holder, src=0)
    return holder[0]


def rounds(items: Iterable[T]) -> Iterator[list[T]]:
    """`items` (which every worker reads alike) in rounds of `world_size`, lazily: item k of a round
    is rank k's, so a round's results gathered in rank order are in input order."""
    size = world_size()
    round_: list[T] = []
    for item in items:
        round_.append(item)
        if len(round_) == size:
            yield round_
            round_ = []
    if round_:
        yield round_


def broadcast_state(module: torch.nn.Module, source: int = 0) -> None:
    """Copy the parameters and buffers of `source`'s module into every worker's, in place, so
    workers agree without reading a file the others wrote (nodes need not share a filesystem)."""
    if not is_distributed():
        return
    device = _collective_device()
    for tensor in module.state_dict().values():
        if tensor.device == device:
            dist.broadcast(tensor, src=source)
        else:
            moved = tensor.to(device)
            dist.broadcast(moved, src=source)
            tensor.copy_(moved)


@contextlib.contextmanager
def this_worker_only() -> Iterator[None]:
    """Metrics read inside report this worker's own counts and make no collective call: for
    progress bars, which only the primary worker shows and at moments the others do not share."""
    token = _THIS_WORKER_ONLY.set(True)
    try:
        yield
    finally:
        _THIS_WORKER_ONLY.reset(token)


def gathers_metrics() -> bool:
    """Whether metrics must be summed over workers now (a collective call every worker makes)."""
    return is_distributed() and not _THIS_WORKER_ONLY.get()
