"""TensorBoard scalars of a training run, written with torch's `SummaryWriter` (the `tensorboard` package)."""
import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from tango.common.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

LOG_DIR = "log"


def tensorboard_available() -> bool:
    """Whether `torch.utils.tensorboard` works: it needs the `tensorboard` package (and imports it)."""
    if importlib.util.find_spec("tensorboard") is None:
        return False
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as error:  # e.g. a protobuf the installed tensorboard does not accept
        logger.warning("tensorboard is installed but cannot be imported: %s", error)
        return False
    return True


class TensorBoardWriter:
    """
    Scalars under `serialization_dir/log/`, in three runs so that `tensorboard --logdir DIR` shows
    training and validation curves of a metric in one chart:

    - `train/` and `validation/`: every epoch metric (`loss`, `precision-overall`,
      `recall-overall`, `f1-measure-overall`, per type, strict), x = epoch (0-based, as
      `metrics_epoch_N.json`);
    - `batches/`: per optimizer step, `learning_rate/group_<i>` of every parameter group, and at
      regular batches the running training `loss` and `f1-measure-overall` (under DDP, those of
      the primary worker's shard), x = optimizer step.

    A resumed run (`--recover`) purges the events the killed run wrote after its last checkpoint
    (`SummaryWriter(purge_step=...)`), so curves do not fold back on themselves.

    # Parameters

    serialization_dir : `Path`
        The run's folder; the scalars go to its `log/` subfolder.
    start_epoch : `int`
        The first epoch this run trains (0-based; later than 0 after `--recover`).
    start_step : `int`
        The number of optimizer steps taken before it, where the step curves resume.
    """

    def __init__(self, serialization_dir: Union[str, Path], start_epoch: int = 0, start_step: int = 0) -> None:
        # Imported here: `torch.utils.tensorboard` fails to import without the `tensorboard` package.
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(serialization_dir) / LOG_DIR
        epoch_purge = start_epoch if start_epoch > 0 else None
        self._train = SummaryWriter(str(self.log_dir / "train"), purge_step=epoch_purge)
        self._validation = SummaryWriter(str(self.log_dir / "validation"), purge_step=epoch_purge)
        # Steps are logged after they are taken: the resumed run's first is start_step + 1.
        step_purge = start_step + 1 if start_step > 0 else None
        self._batches = SummaryWriter(str(self.log_dir / "batches"), purge_step=step_purge)

    def log_learning_rates(self, step: int, learning_rates: Sequence[float]) -> None:
        for index, rate in enumerate(learning_rates):
            self._batches.add_scalar(f"learning_rate/group_{index}", rate, step)

    def log_batch_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        for name in ("loss", "f1-measure-overall"):
            if name in metrics:
                self._batches.add_scalar(name, metrics[name], step)

    def log_epoch(self, epoch: int, train: Mapping[str, Any], validation: Mapping[str, Any]) -> None:
        for writer, metrics in ((self._train, train), (self._validation, validation)):
            for name, value in metrics.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(name, value, epoch)
        # A user watching the run sees every epoch at once, not after the 2-minute default flush.
        self.flush()

    def flush(self) -> None:
        for writer in (self._train, self._validation, self._batches):
            writer.flush()

    def close(self) -> None:
        for writer in (self._train, self._validation, self._batches):
            writer.close()


def tensorboard_wanted(requested: Optional[bool]) -> bool:
    """A trainer's `tensorboard` option: `None` (the default) writes scalars when the package is
    installed, `True` requires it (a clear error without it), `False` turns them off."""
    if requested is None:
        if not tensorboard_available():
            logger.info("tensorboard is not installed, so no TensorBoard scalars (pip install tensorboard)")
        return tensorboard_available()
    if requested and not tensorboard_available():
        raise ConfigurationError(
            "trainer.tensorboard is true, but the tensorboard package is not installed: "
            "pip install 'fmit-plugin[tensorboard]' (or pip install tensorboard), "
            "or set trainer.tensorboard to false"
        )
    return requested
