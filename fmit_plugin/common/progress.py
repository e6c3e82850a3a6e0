"""Progress bars that suit a terminal, a log file (`--file-friendly-logging`) and distributed runs."""
import os
import sys
from collections.abc import Iterable
from typing import Optional

from tqdm import tqdm

from fmit_plugin.common import distributed

# Progress bars, and TensorBoard's running loss / F1, are refreshed every this many batches: each
# refresh reads the running figures back from the device, which a step should not wait for.
LOG_EVERY = 10


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


def progress(iterable: Optional[Iterable], description: str, total: Optional[int] = None) -> tqdm:
    """A tqdm bar on the primary worker (disabled on the others). With `--file-friendly-logging`
    it updates every 10 seconds, in ASCII, one line per update. `iterable=None`: updated by hand."""
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
