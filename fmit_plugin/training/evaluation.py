"""The evaluation loop the trainer's validation and the `evaluate` command share."""
from collections.abc import Iterable
from typing import Any, Optional

import torch

from fmit_plugin.common import distributed
from fmit_plugin.common.device import autocast, move_to_device
from fmit_plugin.common.progress import LOG_EVERY, progress
from fmit_plugin.data.data_loader import Batch
from fmit_plugin.models.model import Model


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
    `predictions` when a list is given (in batch order, each with its instance's `metadata`). The
    bar's last line shows the returned figures. In a distributed run each worker evaluates its shard and
    the counts and losses are summed over workers, so every worker returns the same figures.
    With `amp_dtype` the forward runs under autocast, as the trainer's validation does with `use_amp`."""
    model.eval()
    model.get_metrics(reset=True)
    # Summed on the device and read at bar refreshes only, so no batch waits for a read.
    loss_sum = torch.zeros((), device=device)
    loss_batches = 0
    if distributed.is_distributed():
        description += f" (rank 0 of {distributed.world_size()}, its own shard)"
    # Updated by hand, not by iterating it: the bar must stay open after the last batch to show
    # the final figures (summed over workers), not the running ones of its last refresh.
    bar = progress(None, description, total)
    try:
        with torch.inference_mode():
            for number, batch in enumerate(batches, start=1):
                with autocast(device, amp_dtype):
                    output = model(**move_to_device(batch, device))
                if "loss" in output:
                    loss_sum += output["loss"].float()
                    loss_batches += 1
                if predictions is not None:
                    readable = model.make_output_human_readable(output)
                    for i, words in enumerate(readable["words"]):
                        meta = batch["metadata"][i] if "metadata" in batch else {}
                        predictions.append({
                            "words": words, "tags": readable["tags"][i], "entities": readable["entities"][i],
                            "metadata": meta,
                        })
                bar.update(1)
                if not bar.disable and number % LOG_EVERY == 0:
                    running = running_metrics(model)
                    if loss_batches:
                        running = {"loss": float(loss_sum) / loss_batches, **running}
                    bar.set_postfix_str(description_of(running), refresh=False)
        metrics = model.get_metrics(reset=True)
        total_loss, total_batches = distributed.sum_across_workers(float(loss_sum), loss_batches)
        if total_batches:
            metrics["loss"] = total_loss / total_batches
        if not bar.disable:
            bar.set_postfix_str(description_of(metrics), refresh=False)
    finally:
        bar.close()
    return metrics
