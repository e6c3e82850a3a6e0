"""Helpers the trainer and the evaluate command share: devices, seeding, batches, atomic files."""
import contextlib
import json
import logging
import os
import random
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional, Union

import numpy
import torch
from tango.common.exceptions import ConfigurationError
from tqdm import tqdm

from fmit_plugin.data.data_loader import Batch
from fmit_plugin.models.model import Model
from fmit_plugin.training import distributed


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


def set_seed(seed: int) -> None:
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def move_to_device(batch: Batch, device: torch.device) -> Batch:
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


TEMP_SUFFIX = ".tmp"
# Read once: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path: Union[str, os.PathLike], writer: Any) -> None:
    """Write through `writer(temp_path)` into a temporary file beside `path`, flush it to disk, then
    rename it over `path`: a crash or kill at any moment leaves either the old complete file or the
    new complete file under the final name, never a half-written one (at worst a `.NAME.*.tmp`
    file, which `remove_stale_temp_files` clears)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(handle)
    try:
        writer(temp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would, or keep the
        # mode of the file it replaces.
        os.chmod(temp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_UMASK)
        _fsync(temp)
        os.replace(temp, path)
        _fsync_directory(path.parent)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _fsync(path: str) -> None:
    # The rename is atomic for a killed process; fsync makes it so for a machine that loses power.
    if os.path.isfile(path):
        with open(path, "rb") as file:
            os.fsync(file.fileno())


def _fsync_directory(directory: Path) -> None:
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def remove_stale_temp_files(directory: Union[str, os.PathLike]) -> list[Path]:
    """Delete the temporary files `atomic_write` leaves behind when killed mid-write."""
    stale = [p for p in Path(directory).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink()
    return stale


def dump_metrics(path: Union[str, os.PathLike], metrics: dict[str, Any]) -> None:
    text = json.dumps(metrics, indent=2, sort_keys=True)
    atomic_write(path, lambda temp: Path(temp).write_text(text + "\n", encoding="utf-8"))


LOG_FILE = "out.log"
# Progress bars, and TensorBoard's running loss / F1, are refreshed every this many batches: each
# refresh reads the running figures back from the device, which a step should not wait for.
LOG_EVERY = 10


class _WarningsAndAbove(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


@contextlib.contextmanager
def training_logs(serialization_dir: Union[str, os.PathLike]) -> Iterator[None]:
    """
    The primary worker also writes the log to `serialization_dir/out.log` (appended to on
    `--recover`); the other workers of a distributed run keep only warnings and errors on the
    console, so `torchrun` shows each message once.
    """
    root = logging.getLogger()
    if distributed.is_primary():
        path = Path(serialization_dir) / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(name)s - %(message)s"))
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            handler.close()
        return
    quiet = _WarningsAndAbove()
    handlers = list(root.handlers)
    for console in handlers:
        console.addFilter(quiet)
    try:
        yield
    finally:
        for console in handlers:
            console.removeFilter(quiet)


def file_friendly_logging() -> bool:
    """Set by `--file-friendly-logging` (or `FMIT_FILE_FRIENDLY_LOGGING=1`)."""
    return os.environ.get("FMIT_FILE_FRIENDLY_LOGGING") == "1"


class _LinePerUpdate:
    """A stream for tqdm that turns its carriage-return redraws into one line per update, so a log
    file (CI) holds readable lines rather than one line overwritten in place."""

    def write(self, text: str) -> None:
        lines = [line.rstrip() for line in text.replace("\r", "\n").split("\n")]
        lines = [line for line in lines if line]
        if lines:
            sys.stderr.write("\n".join(lines) + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress(iterable: Iterable, description: str, total: Optional[int] = None) -> tqdm:
    """A tqdm bar on the primary worker (disabled on the others). With `--file-friendly-logging`
    it updates every 10 seconds, in ASCII, one line per update."""
    friendly = file_friendly_logging()
    return tqdm(
        iterable,
        desc=description,
        total=total,
        disable=not distributed.is_primary(),
        ascii=friendly,
        mininterval=10.0 if friendly else 0.1,
        dynamic_ncols=not friendly,
        file=_LinePerUpdate() if friendly else None,
        leave=True,
    )


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    """`torch.autocast` to `dtype` on `device`'s type; no autocast when `dtype` is `None`."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype)


def running_metrics(model: Model) -> dict[str, float]:
    """The model's metrics so far for a progress bar: under DDP, this worker's own (no collective
    call, since workers reach a bar update at different moments)."""
    with distributed.this_worker_only():
        return model.get_metrics()


def description_of(metrics: dict[str, float]) -> str:
    shown = {k: v for k, v in metrics.items() if k == "loss" or ("overall" in k and "strict" not in k)}
    return ", ".join(f"{k.replace('-measure', '').replace('-overall', '')}: {v:.4f}" for k, v in shown.items())


def evaluate(
    model: Model,
    batches: Iterable[Batch],
    device: torch.device,
    description: str = "evaluating",
    total: Optional[int] = None,
    predictions: Optional[list[dict[str, Any]]] = None,
    amp_dtype: Optional[torch.dtype] = None,
) -> dict[str, float]:
    """Mean loss and the model's metrics over `batches`; collects readable outputs into
    `predictions` when a list is given. In a distributed run each worker evaluates its shard and
    the counts and losses are summed over workers, so every worker returns the same figures.
    With `amp_dtype` the forward runs under autocast, as the trainer's validation does with `use_amp`."""
    model.eval()
    model.get_metrics(reset=True)
    # Summed on the device and read at bar refreshes only, so no batch waits for a read.
    loss_sum = torch.zeros((), device=device)
    loss_batches = 0
    if distributed.is_distributed():
        description += f" (rank 0 of {distributed.world_size()}, its own shard)"
    bar = progress(batches, description, total)
    with torch.inference_mode():
        for number, batch in enumerate(bar, start=1):
            with autocast(device, amp_dtype):
                output = model(**move_to_device(batch, device))
            if "loss" in output:
                loss_sum += output["loss"].float()
                loss_batches += 1
            if predictions is not None:
                readable = model.make_output_human_readable(output)
                for i, words in enumerate(readable["words"]):
                    predictions.append(
                        {"words": words, "tags": readable["tags"][i], "entities": readable["entities"][i]}
                    )
            if not bar.disable and (number % LOG_EVERY == 0 or number == total):
                running = running_metrics(model)
                if loss_batches:
                    running = {"loss": float(loss_sum) / loss_batches, **running}
                bar.set_postfix_str(description_of(running), refresh=False)
    metrics = model.get_metrics(reset=True)
    total_loss, total_batches = distributed.sum_across_workers(float(loss_sum), loss_batches)
    if total_batches:
        metrics["loss"] = total_loss / total_batches
    return metrics
