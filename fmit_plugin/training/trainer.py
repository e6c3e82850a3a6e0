"""The `Trainer` registry and AllenNLP's "gradient_descent" trainer."""
import contextlib
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy
import torch
from tango.common import Lazy, Registrable
from tango.common.exceptions import ConfigurationError
from tango.integrations.torch import LRScheduler

from fmit_plugin.common import distributed
from fmit_plugin.common.device import autocast, move_to_device, resolve_device
from fmit_plugin.common.file_utils import atomic_write, dump_metrics, remove_stale_temp_files
from fmit_plugin.common.progress import LOG_EVERY, progress
from fmit_plugin.data.data_loader import DataLoader
from fmit_plugin.models.model import Model
from fmit_plugin.training.evaluation import description_of, evaluate, running_metrics
from fmit_plugin.training.optimizers import build_optimizer
from fmit_plugin.training.tensorboard_writer import TensorBoardWriter, tensorboard_wanted

logger = logging.getLogger(__name__)

BEST_WEIGHTS = "best.th"
CHECKPOINT = "checkpoint.th"
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _pending_best(epoch: int) -> str:
    """Best weights of `epoch`, written before that epoch's checkpoint and renamed to `best.th` after
    it, so that `best.th` always belongs to the last complete checkpoint (see `restore_checkpoint`)."""
    return f"{BEST_WEIGHTS}.epoch_{epoch}"


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
    a resumable checkpoint written atomically after every epoch, `metrics_epoch_N.json` /
    `metrics.json`, progress bars and TensorBoard scalars in the serialization directory.

    Under `torchrun` (a process group is initialised) the model is wrapped in PyTorch's
    `DistributedDataParallel` (NCCL on GPUs, gloo on CPUs): each worker trains on its shard of the
    batches, validation metrics are summed over workers as counts, and only the primary worker
    (global rank 0) writes files. The device is then each worker's LOCAL_RANK GPU, or the CPU.

    # Parameters

    model : `Model`
        The model to train, built by the train command from the config's `model`.
    serialization_dir : `Path`
        The run's folder (`-s`): checkpoints, `metrics_epoch_N.json`, `best.th`, logs.
    data_loader : `DataLoader`
        Training batches, built by the train command from the config's `data_loader`.
    validation_data_loader : `DataLoader`, optional
        Validation batches; without them `validation_metric` is read from the training metrics.
    optimizer : `Dict`, optional (default = `{"type": "adam", "lr": 1e-3}`)
        Any registered `Optimizer` ("adam", "adamw", "torch::SGD"...) and its options, plus
        AllenNLP's `parameter_groups` (`[[["regex"], {"lr": 5e-5}], ...]`).
    learning_rate_scheduler : `LRScheduler`, optional
        Stepped after every optimizer step ("linear_with_warmup", "torch::StepLR"...); it is
        given `num_epochs` and `num_steps_per_epoch` (optimizer steps, after accumulation).
    num_epochs : `int`, optional (default = `20`)
        Epochs to train, numbered 0 to `num_epochs - 1` (fewer if `patience` stops early).
    patience : `int`, optional (default = `None`)
        Stop after this many epochs without improvement of `validation_metric`.
    validation_metric : `str`, optional (default = `"+f1-measure-overall"`)
        `+name` to maximise, `-name` to minimise (e.g. `-loss`). The best epoch's weights are kept
        in `best.th` and archived.
    grad_norm : `float`, optional (default = `None`)
        Clip the total gradient norm to this value (of the true gradients, under fp16 too).
    cuda_device : `int`, optional (default = `-1`, the CPU)
        Ignored under `torchrun`, where LOCAL_RANK picks the GPU.
    num_gradient_accumulation_steps : `int`, optional (default = `1`)
        Sum the gradients of this many batches (each loss divided by it) before an optimizer step,
        so 8 x 2 trains like batches of 16. Under DDP gradients are only all-reduced at the last.
    use_amp : `bool`, optional (default = `False`)
        Automatic mixed precision: the forward pass runs under `torch.autocast` in `amp_dtype`, in
        training and validation (as in AllenNLP; `allennlp evaluate` stays in full precision).
        Meant for GPUs; on the CPU it works but is slow without native bfloat16.
    amp_dtype : `str`, optional (default = `"bfloat16"`)
        `"bfloat16"` (no loss scaling needed) or `"float16"` (with a `torch.amp.GradScaler`, whose
        state is checkpointed).
    tensorboard : `bool`, optional (default = `None`)
        TensorBoard scalars under `serialization_dir/log` (see `TensorBoardWriter`). `None` writes
        them when the `tensorboard` package is installed, `true` requires it, `false` turns them off.
    seed : `int`, optional (default = `13370`)
        Seeds python, numpy and torch before the model is built (the train command reads it
        early) and drives the batch order, so two runs of a config on the CPU are identical.

    Registered as a `Trainer` with name "gradient_descent".
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
        amp_dtype: str = "bfloat16",
        tensorboard: Optional[bool] = None,
        seed: int = 13370,
    ) -> None:
        if validation_metric[:1] not in "+-" or len(validation_metric) < 2:
            raise ConfigurationError(
                f"validation_metric must start with + or -, got '{validation_metric}'"
            )
        if num_epochs < 1:
            raise ConfigurationError(f"num_epochs must be at least 1, got {num_epochs}")
        if num_gradient_accumulation_steps < 1:
            raise ConfigurationError("num_gradient_accumulation_steps must be at least 1")
        if amp_dtype not in AMP_DTYPES:
            raise ConfigurationError(f"amp_dtype must be one of {sorted(AMP_DTYPES)}, got '{amp_dtype}'")
        self.model = model
        self.serialization_dir = Path(serialization_dir)
        self.data_loader = data_loader
        self.validation_data_loader = validation_data_loader
        self.device = distributed.local_device() if distributed.is_distributed() else resolve_device(cuda_device)
        self.model.to(self.device)
        self._module: torch.nn.Module = self.model
        self._ddp = distributed.is_distributed()
        if self._ddp:
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
        self.use_amp = use_amp
        self.amp_dtype = AMP_DTYPES[amp_dtype]
        if use_amp and self.device.type == "cuda" and self.amp_dtype == torch.bfloat16:
            if not torch.cuda.is_bf16_supported():
                raise ConfigurationError('This GPU has no bfloat16: set trainer.amp_dtype to "float16"')
        if use_amp and self.device.type == "cpu":
            logger.warning("use_amp on the CPU: autocast to %s is slow on CPUs without native support", amp_dtype)
        # Only float16 needs loss scaling: its small exponent range lets gradients underflow.
        self.scaler: Optional[torch.amp.GradScaler] = (
            torch.amp.GradScaler(self.device.type) if use_amp and self.amp_dtype == torch.float16 else None
        )
        self._tensorboard = tensorboard_wanted(tensorboard)
        self._writer: Optional[TensorBoardWriter] = None
        self.seed = seed
        self.start_epoch = 0
        self.global_step = 0
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.epochs_without_improvement = 0
        self.best_metrics: dict[str, float] = {}
        self._last_metrics: dict[str, Any] = {}

    # ------------------------------------------------------------------ checkpoints
    def _rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"python": random.getstate(), "numpy": numpy.random.get_state(),
                                 "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, states: Any) -> None:
        if isinstance(states, dict):  # a checkpoint from before per-worker states
            states = [states]
        if len(states) == distributed.world_size():
            state = states[distributed.rank()]
        else:
            logger.warning("The checkpoint was written by %d workers, this run has %d: random number "
                           "streams differ from an uninterrupted run", len(states), distributed.world_size())
            state = states[0]
        random.setstate(state["python"])
        numpy.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"].cpu(), self.device)

    def _checkpoint_state(self, epoch: int, metrics: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The training state after `epoch`, on the primary worker (`None` on the others). A
        collective call: every worker's random number state goes into the checkpoint."""
        rng = distributed.all_gather_object(self._rng_state())
        if not distributed.is_primary():
            return None
        return {
            "epoch": epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "epochs_without_improvement": self.epochs_without_improvement,
            "metrics": metrics,
            "rng": rng,
        }

    def restore_checkpoint(self) -> bool:
        """
        Resume from `checkpoint.th`, the state after the last complete epoch: weights, optimizer,
        scheduler, loss scaler, early-stopping state, every worker's random number state, epoch and
        step. Only complete files ever get that name (`atomic_write`); temporary files of a write
        that was killed are deleted, and `best.th` is made the one that checkpoint selected.
        Returns whether there was a checkpoint. Every worker of a distributed run must call it.
        """
        path = self.serialization_dir / CHECKPOINT
        visible = distributed.all_gather_object(path.is_file())
        if any(visible) and not all(visible):
            missing = [rank for rank, seen in enumerate(visible) if not seen]
            raise ConfigurationError(
                f"--recover: workers {missing} cannot see {path}. Resuming a multi-node run needs the "
                "serialization directory on a filesystem every node shares (or a copy of it on each node)."
            )
        state = torch.load(path, map_location=self.device, weights_only=False) if visible[0] else None
        if distributed.is_primary():
            for stale in remove_stale_temp_files(self.serialization_dir):
                logger.info("Removed %s, left by a write that was interrupted", stale.name)
            self._settle_best_weights(state["best_epoch"] if state is not None else None)
        distributed.barrier()
        if state is None:
            logger.info("--recover: no checkpoint in %s yet, so training starts from the beginning",
                        self.serialization_dir)
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epoch"] + 1
        self.global_step = state.get("global_step", 0)
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.best_metrics = state["best_metrics"]
        self.epochs_without_improvement = state["epochs_without_improvement"]
        self._last_metrics = state.get("metrics", {})
        self._set_rng_state(state["rng"])
        # 0-based, as metrics_epoch_N.json and best_epoch (AllenNLP's convention).
        logger.info("Recovered from %s: resuming at epoch %d", path, self.start_epoch)
        return True

    def _settle_best_weights(self, best_epoch: Optional[int]) -> None:
        """A kill between writing an epoch's best weights and renaming them over `best.th` leaves
        them pending: promote them if the checkpoint counts that epoch as the best, else drop them
        (that epoch is trained again)."""
        for pending in self.serialization_dir.glob(f"{BEST_WEIGHTS}.epoch_*"):
            if best_epoch is not None and pending.name == _pending_best(best_epoch):
                os.replace(pending, self.serialization_dir / BEST_WEIGHTS)
            else:
                pending.unlink()

    def _save(self, name: str, state: Any) -> None:
        if distributed.is_primary():
            atomic_write(self.serialization_dir / name, lambda temp: torch.save(state, temp))

    # ------------------------------------------------------------------ training
    @property
    def _autocast_dtype(self) -> Optional[torch.dtype]:
        return self.amp_dtype if self.use_amp else None

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.model.get_metrics(reset=True)
        self.data_loader.set_epoch(self.seed + epoch)
        total_loss = torch.zeros((), device=self.device)
        # The first batch whose loss was not finite (0: none yet), kept on the device and read with the
        # running loss every LOG_EVERY batches: a check per batch would make every step wait for it.
        first_bad_batch = torch.zeros((), device=self.device)
        batches = 0
        steps = len(self.data_loader)
        bar = progress(self.data_loader, f"epoch {epoch}/{self.num_epochs - 1} train", steps)
        self.optimizer.zero_grad(set_to_none=True)
        for batches, batch in enumerate(bar, start=1):
            stepping = batches % self.accumulation == 0 or batches == steps
            # DDP all-reduces gradients at every backward; accumulation steps skip that until the last.
            synchronise = stepping or not self._ddp
            with (contextlib.nullcontext() if synchronise else self._module.no_sync()):  # type: ignore[operator]
                with autocast(self.device, self._autocast_dtype):
                    output = self._module(**move_to_device(batch, self.device))
                loss = output["loss"]
                scaled = loss / self.accumulation
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total_loss += loss.detach()
            first_bad_batch = torch.where(
                (first_bad_batch == 0) & ~torch.isfinite(loss.detach()), batches, first_bad_batch
            )
            if stepping:
                self._step()
            if batches % LOG_EVERY != 0 and batches != steps:
                continue
            loss_sum, bad_batch = torch.stack([total_loss, first_bad_batch.to(total_loss.dtype)]).tolist()
            if bad_batch:
                raise RuntimeError(
                    f"Loss became non-finite at epoch {epoch}, batch {int(bad_batch)} (noticed at batch "
                    f"{batches}; the checkpoints of the finished epochs are untouched)"
                )
            # Running figures for the bar and TensorBoard: the primary worker's own shard, no sync.
            if not bar.disable or self._writer is not None:
                running = {"loss": loss_sum / batches, **running_metrics(self.model)}
                bar.set_postfix_str(description_of(running), refresh=False)
                if self._writer is not None:
                    self._writer.log_batch_metrics(self.global_step, running)
        metrics = self.model.get_metrics(reset=True)
        loss_sum, batch_count = distributed.sum_across_workers(float(total_loss), batches)
        metrics["loss"] = loss_sum / max(1, batch_count)
        return metrics

    def _step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # so that clipping sees the true gradients
        if self.grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.grad is not None], self.grad_norm
            )
        stepped = True
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped when the gradients hold inf / NaN
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale  # a lowered scale means a skipped step
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.scheduler is not None and stepped:
            self.scheduler.step()
        if self._writer is not None:
            self._writer.log_learning_rates(self.global_step, [group["lr"] for group in self.optimizer.param_groups])

    def _out_of_patience(self) -> bool:
        return self.patience is not None and self.epochs_without_improvement >= self.patience

    def train(self) -> dict[str, Any]:
        if self._tensorboard and distributed.is_primary():
            self._writer = TensorBoardWriter(self.serialization_dir, self.start_epoch, self.global_step)
        try:
            metrics = self._train_epochs()
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        # Every worker continues (e.g. to the test set) with the best weights; the primary reads them
        # and sends them to the others, which need not share its filesystem.
        if distributed.is_primary() and (self.serialization_dir / BEST_WEIGHTS).is_file():
            best = torch.load(self.serialization_dir / BEST_WEIGHTS, map_location=self.device)
            self.model.load_state_dict(best)
        distributed.broadcast_state(self.model)
        return metrics

    def _train_epochs(self) -> dict[str, Any]:
        started = time.time()
        metrics: dict[str, Any] = dict(self._last_metrics)
        # A recovered run goes on counting from the time its checkpoint had recorded.
        earlier = float(metrics.get("training_duration_seconds", 0.0))
        for epoch in range(self.start_epoch, self.num_epochs):
            # Checked first, so that a recovered run that had already stopped does not go on.
            if self._out_of_patience():
                logger.info("Ran out of patience (%d epochs without improvement)", self.patience)
                break
            epoch_start = time.time()
            train_metrics = self._train_epoch(epoch)
            validation_metrics: dict[str, float] = {}
            if self.validation_data_loader is not None:
                self.validation_data_loader.set_epoch(0)
                validation_metrics = evaluate(
                    self.model, self.validation_data_loader, self.device,
                    f"epoch {epoch}/{self.num_epochs - 1} validation", len(self.validation_data_loader),
                    amp_dtype=self._autocast_dtype,
                )
            watched = validation_metrics or train_metrics
            if self.metric_name not in watched:
                raise ConfigurationError(
                    f"validation_metric '{self.metric_name}' is not among the metrics: {sorted(watched)}"
                )
            value = self.metric_sign * watched[self.metric_name]
            improved = self.best is None or value > self.best
            if improved:
                self.best, self.best_epoch = value, epoch
                self.best_metrics = dict(validation_metrics)
                self.epochs_without_improvement = 0
                self._save(_pending_best(epoch), self.model.state_dict())
            else:
                self.epochs_without_improvement += 1
            metrics = {
                "epoch": epoch,
                "best_epoch": self.best_epoch,
                "epoch_duration_seconds": time.time() - epoch_start,
                "training_duration_seconds": earlier + time.time() - started,
                **{f"training_{k}": v for k, v in train_metrics.items()},
                **{f"validation_{k}": v for k, v in validation_metrics.items()},
                **{f"best_validation_{k}": v for k, v in self.best_metrics.items()},
            }
            if distributed.is_primary():
                dump_metrics(self.serialization_dir / f"metrics_epoch_{epoch}.json", metrics)
            if self._writer is not None:
                self._writer.log_epoch(epoch, train_metrics, validation_metrics)
            # The epoch is complete once its checkpoint is on disk; only then does best.th change.
            self._save(CHECKPOINT, self._checkpoint_state(epoch, metrics))
            if improved and distributed.is_primary():
                os.replace(self.serialization_dir / _pending_best(epoch), self.serialization_dir / BEST_WEIGHTS)
            distributed.barrier()
            logger.info("Epoch %d/%d: training %s; validation %s", epoch, self.num_epochs - 1,
                        description_of(train_metrics), description_of(validation_metrics) or "none")
        metrics["training_duration_seconds"] = earlier + time.time() - started
        return metrics
