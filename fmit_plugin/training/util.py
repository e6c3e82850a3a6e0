"""Helpers the trainer and the evaluate command share: devices, seeding, batches, atomic files."""
import json
import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional, Union

import numpy
import torch
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
        raise RuntimeError(f"cuda_device={cuda_device} was asked for, but no GPU is available")
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


def atomic_write(path: Union[str, os.PathLike], writer: Any) -> None:
    """Write through `writer(temp_path)` into a temporary file beside `path`, then rename it over
    `path`: a crash never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        writer(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def dump_metrics(path: Union[str, os.PathLike], metrics: dict[str, Any]) -> None:
    text = json.dumps(metrics, indent=2, sort_keys=True)
    atomic_write(path, lambda temp: Path(temp).write_text(text + "\n", encoding="utf-8"))


def progress(iterable: Iterable, description: str, total: Optional[int] = None) -> tqdm:
    """A tqdm bar; `FMIT_FILE_FRIENDLY_LOGGING=1` (set by --file-friendly-logging) makes it update
    rarely and in ASCII, so CI logs stay readable."""
    file_friendly = os.environ.get("FMIT_FILE_FRIENDLY_LOGGING") == "1"
    return tqdm(
        iterable,
        desc=description,
        total=total,
        disable=not distributed.is_primary(),
        ascii=file_friendly,
        mininterval=10.0 if file_friendly else 0.1,
        dynamic_ncols=not file_friendly,
        leave=True,
    )


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
) -> dict[str, float]:
    """Mean loss and the model's metrics over `batches`; collects readable outputs into
    `predictions` when a list is given. In a distributed run each worker evaluates its shard and
    the counts and losses are summed over workers, so every worker returns the same figures."""
    model.eval()
    model.get_metrics(reset=True)
    loss_sum, loss_batches = 0.0, 0
    bar = progress(batches, description, total)
    with torch.inference_mode():
        for batch in bar:
            output = model(**move_to_device(batch, device))
            if "loss" in output:
                loss_sum += float(output["loss"])
                loss_batches += 1
            if predictions is not None:
                readable = model.make_output_human_readable(output)
                for i, words in enumerate(readable["words"]):
                    predictions.append(
                        {"words": words, "tags": readable["tags"][i], "entities": readable["entities"][i]}
                    )
            if not distributed.is_distributed():  # get_metrics is a collective call there
                bar.set_postfix_str(description_of(model.get_metrics()), refresh=False)
    metrics = model.get_metrics(reset=True)
    total_loss, total_batches = distributed.sum_across_workers(loss_sum, loss_batches)
    if total_batches:
        metrics["loss"] = total_loss / total_batches
    return metrics
