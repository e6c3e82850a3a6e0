"""The log file of a training run (`out.log` in its serialization directory)."""
import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Union

from fmit_plugin.common import distributed

LOG_FILE = "out.log"


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
