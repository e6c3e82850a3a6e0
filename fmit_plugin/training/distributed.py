"""PyTorch's own distributed engine, as launched by `torchrun`: process group set-up and helpers."""
import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_primary() -> bool:
    """Only the primary worker writes checkpoints, metrics, logs and the archive."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_from_environment() -> bool:
    """Join the process group `torchrun` describes in the environment (WORLD_SIZE, RANK,
    MASTER_ADDR...): NCCL on GPUs, gloo on CPUs. Returns whether this run is distributed."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")
    return True


def local_device() -> torch.device:
    """This worker's device in a distributed run: its LOCAL_RANK GPU, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def sum_across_workers(*values: float) -> list[float]:
    """Element-wise sums over all workers (for loss totals); the values themselves when alone."""
    if not is_distributed():
        return list(values)
    device = local_device() if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
