"""The `Trainer` registry and AllenNLP's "gradient_descent" trainer."""
import contextlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy
import torch
from tango.common import Lazy, Registrable
from tango.common.exceptions import ConfigurationError
from tango.integrations.torch import LRScheduler

from fmit_plugin.data.data_loader import DataLoader
from fmit_plugin.models.model import Model
from fmit_plugin.training import distributed
from fmit_plugin.training.optimizers import build_optimizer
from fmit_plugin.training.util import (
    atomic_write,
    description_of,
    dump_metrics,
    evaluate,
    move_to_device,
    progress,
    resolve_device,
)

logger = logging.getLogger(__name__)

BEST_WEIGHTS = "best.th"
CHECKPOINT = "checkpoint.th"


class Trainer(Registrable):
    """Trains a model; `restore_checkpoint` resumes an interrupted run first (`--recover`)."""

    default_implementation = "gradient_descent"
    device: torch.device

    def restore_checkpoint(self) -> bool:
        raise NotImplementedError

    def train(self) -> dict[str, Any]:
        raise NotImplementedError


@Trainer.register("gradient_descent")
class GradientDescentTrainer(Trainer):
    """
    Epoch loop with validation, early stopping on `validation_metric`, best-weights selection,
    a resumable checkpoint written atomically after every epoch, and `metrics_epoch_N.json` /
    `metrics.json` in the serialization directory.

    Registered as a `Trainer` with name "gradient_descent".

    # Parameters

    model, serialization_dir, data_loader, validation_data_loader : supplied by the train command.
    optimizer : `Dict`, optional (default = `{"type": "adam", "lr": 1e-3}`)
        Any registered `Optimizer` ("adam", "adamw", "torch::SGD"...) and its options, plus
        AllenNLP's `parameter_groups` (`[[["regex"], {"lr": 5e-5}], ...]`).
    learning_rate_scheduler : `LRScheduler`, optional
        Stepped after every optimizer step ("linear_with_warmup", "torch::StepLR"...).
    num_epochs : `int`, optional (default = `20`)
    patience : `int`, optional (default = `None`)
        Stop after this many epochs without improvement of `validation_metric`.
    validation_metric : `str`, optional (default = `"+f1-measure-overall"`)
        `+name` to maximise, `-name` to minimise (e.g. `-loss`).
    grad_norm : `float`, optional (default = `None`)
        Clip the total gradient norm to this value.
    cuda_device : `int`, optional (default = `-1`, the CPU)
    num_gradient_accumulation_steps : `int`, optional (default = `1`)
    use_amp : `bool`, optional (default = `False`)
        bfloat16 autocast on GPU.
    seed : `int`, optional (default = `13370`)
        Seeds python, numpy and torch before the model is built (the train command reads it
        early) and drives the batch order.

    Under `torchrun` (a process group is initialised) the model is wrapped in PyTorch's
    `DistributedDataParallel`, each worker trains on its shard of the batches, metrics are summed
    over workers, and only the primary worker writes files. `cuda_device` is then each worker's
    LOCAL_RANK GPU (or the CPU with gloo).
    """

    def __init__(
        self,
        model: Model,
        serialization_dir: Union[str, Path],
        data_loader: DataLoader,
        validation_data_loader: Optional[DataLoader] = None,
        optimizer: Optional[dict[str, Any]] = None,
        learning_rate_scheduler: Optional[Lazy[LRScheduler]] = None,
        num_epochs: int = 20,
        patience: Optional[int] = None,
        validation_metric: str = "+f1-measure-overall",
        grad_norm: Optional[float] = None,
        cuda_device: Optional[Union[int, str]] = -1,
        num_gradient_accumulation_steps: int = 1,
        use_amp: bool = False,
        seed: int = 13370,
    ) -> None:
        if validation_metric[:1] not in "+-" or len(validation_metric) < 2:
            raise ConfigurationError(
                f"validation_metric must start with + or -, got '{validation_metric}'"
            )
        if num_gradient_accumulation_steps < 1:
            raise ConfigurationError("num_gradient_accumulation_steps must be at least 1")
        self.model = model
        self.serialization_dir = Path(serialization_dir)
        self.data_loader = data_loader
        self.validation_data_loader = validation_data_loader
        self.device = distributed.local_device() if distributed.is_distributed() else resolve_device(cuda_device)
        self.model.to(self.device)
        self._module: torch.nn.Module = self.model
        if distributed.is_distributed():
            # find_unused_parameters: e.g. FMIT's empty-image vector is unused in batches where every
            # tweet has an image, and the boundary branch is skipped at lambda = 0.
            self._module = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
            data_loader.even_shards = True
        self.optimizer = build_optimizer(optimizer or {"type": "adam", "lr": 1e-3}, model)
        self.num_epochs = num_epochs
        self.accumulation = num_gradient_accumulation_steps
        steps_per_epoch = math.ceil(len(data_loader) / self.accumulation)
        self.scheduler = (
            learning_rate_scheduler.construct(
                optimizer=self.optimizer, num_epochs=num_epochs, num_steps_per_epoch=steps_per_epoch
            )
            if learning_rate_scheduler is not None
            else None
        )
        self.patience = patience
        self.metric_sign = 1.0 if validation_metric[0] == "+" else -1.0
        self.metric_name = validation_metric[1:]
        self.grad_norm = grad_norm
        self.use_amp = use_amp and self.device.type == "cuda"
        self.seed = seed
        self.start_epoch = 0
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.epochs_without_improvement = 0
        self.best_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "epochs_without_improvement": self.epochs_without_improvement,
            "rng": {"python": random.getstate(), "numpy": numpy.random.get_state(),
                    "torch": torch.get_rng_state()},
        }

    def restore_checkpoint(self) -> bool:
        """Resume from `checkpoint.th` if one exists (only complete files ever get that name)."""
        path = self.serialization_dir / CHECKPOINT
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch = state["epoch"] + 1
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_metrics = state["best_metrics"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        random.setstate(state["rng"]["python"])
        numpy.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        logger.info("Recovered from %s: resuming at epoch %d", path, self.start_epoch)
        return True

    def _save(self, name: str, state: Any) -> None:
        if distributed.is_primary():
            atomic_write(self.serialization_dir / name, lambda temp: torch.save(state, temp))

    # ------------------------------------------------------------------ training
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.model.get_metrics(reset=True)
        self.data_loader.set_epoch(self.seed + epoch)
        total_loss = torch.zeros((), device=self.device)
        batches = 0
        bar = progress(self.data_loader, f"epoch {epoch + 1}/{self.num_epochs} train", len(self.data_loader))
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.use_amp
            else contextlib.nullcontext()
        )
        steps = len(self.data_loader)
        for batches, batch in enumerate(bar, start=1):
            stepping = batches % self.accumulation == 0 or batches == steps
            # DDP averages gradients at every backward; accumulation steps skip that until the last.
            synchronise = stepping or not isinstance(self._module, torch.nn.parallel.DistributedDataParallel)
            with autocast, (contextlib.nullcontext() if synchronise else self._module.no_sync()):  # type: ignore[operator]
                output = self._module(**move_to_device(batch, self.device))
                loss = output["loss"]
                if not torch.isfinite(loss):
                    raise RuntimeError(f"Loss became {float(loss)} at epoch {epoch + 1}, batch {batches}")
                (loss / self.accumulation).backward()
            total_loss += loss.detach()
            if stepping:
                self._step()
            if batches % 10 == 0 or batches == len(self.data_loader):
                metrics = {"loss": float(total_loss) / batches, **self.model.get_metrics()}
                bar.set_postfix_str(description_of(metrics), refresh=False)
        metrics = self.model.get_metrics(reset=True)
        loss_sum, batch_count = distributed.sum_across_workers(float(total_loss), batches)
        metrics["loss"] = loss_sum / max(1, batch_count)
        return metrics

    def _step(self) -> None:
        if self.grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.grad is not None], self.grad_norm
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()

    def train(self) -> dict[str, Any]:
        started = time.time()
        metrics: dict[str, Any] = {}
        for epoch in range(self.start_epoch, self.num_epochs):
            epoch_start = time.time()
            train_metrics = self._train_epoch(epoch)
            validation_metrics: dict[str, float] = {}
            if self.validation_data_loader is not None:
                self.validation_data_loader.set_epoch(0)
                validation_metrics = evaluate(
                    self.model, self.validation_data_loader, self.device,
                    f"epoch {epoch + 1}/{self.num_epochs} validation", len(self.validation_data_loader),
                )
            watched = validation_metrics or train_metrics
            if self.metric_name not in watched:
                raise ConfigurationError(
                    f"validation_metric '{self.metric_name}' is not among the metrics: {sorted(watched)}"
                )
            value = self.metric_sign * watched[self.metric_name]
            if self.best is None or value > self.best:
                self.best, self.best_epoch = value, epoch
                self.best_metrics = dict(validation_metrics)
                self.epochs_without_improvement = 0
                self._save(BEST_WEIGHTS, self.model.state_dict())
            else:
                self.epochs_without_improvement += 1
            metrics = {
                "epoch": epoch,
                "best_epoch": self.best_epoch,
                "epoch_duration_seconds": time.time() - epoch_start,
                **{f"training_{k}": v for k, v in train_metrics.items()},
                **{f"validation_{k}": v for k, v in validation_metrics.items()},
                **{f"best_validation_{k}": v for k, v in self.best_metrics.items()},
            }
            if distributed.is_primary():
                dump_metrics(self.serialization_dir / f"metrics_epoch_{epoch}.json", metrics)
            self._save(CHECKPOINT, self._checkpoint_state(epoch))
            distributed.barrier()  # nobody reads best.th before the primary has written it
            logger.info("Epoch %d: %s", epoch + 1, description_of(watched))
            if self.patience is not None and self.epochs_without_improvement >= self.patience:
                logger.info("Ran out of patience (%d epochs without improvement)", self.patience)
                break
        metrics["training_duration_seconds"] = time.time() - started
        if (self.serialization_dir / BEST_WEIGHTS).is_file():
            best = torch.load(self.serialization_dir / BEST_WEIGHTS, map_location=self.device)
            self.model.load_state_dict(best)
        return metrics
