"""Devices as AllenNLP names them (`cuda_device`), moving batches there, and mixed precision."""
import contextlib
from typing import Any, Optional, Union

import torch
from tango.common.exceptions import ConfigurationError


def resolve_device(cuda_device: Optional[Union[int, str]]) -> torch.device:
    """AllenNLP's `cuda_device`: `None` or a negative number is the CPU, `n` is GPU n."""
    if cuda_device is None or (isinstance(cuda_device, int) and cuda_device < 0):
        return torch.device("cpu")
    if isinstance(cuda_device, str):
        return torch.device(cuda_device)
    if not torch.cuda.is_available():
        raise ConfigurationError(
            f"cuda_device={cuda_device} was asked for, but no GPU is available: use -1 for the CPU "
            "(CUDA_DEVICE=-1, or --cuda-device -1)"
        )
    if cuda_device >= torch.cuda.device_count():
        raise ConfigurationError(f"cuda_device={cuda_device}, but this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", cuda_device)


def move_to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on `device` (copied without blocking the host); other values as they are."""
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """`torch.autocast` to `dtype` on `device`'s type; no autocast when `dtype` is `None`."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype)
