"""Files written so that a crash or a kill never leaves a half-written one under its final name."""
import contextlib
import json
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

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
        rename_into_place(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside, SIGTERM unwinds as `SystemExit(143)` (running `finally` blocks, which remove temporary
    files) instead of ending the process at once: for an archive being unpacked, or a torchrun worker
    that torchrun stops because another one failed. Only the main thread may set handlers; elsewhere
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def rename_into_place(temp: Union[str, os.PathLike], path: Union[str, os.PathLike]) -> None:
    """The last step of an atomic write: the complete `temp` file (made by `mkstemp` beside `path`)
    flushed to disk and renamed over `path`."""
    path = Path(path)
    # mkstemp makes the file private (0600); give it the mode a plain open() would, or keep the
    # mode of the file it replaces.
    os.chmod(temp, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o666 & ~_UMASK)
    _fsync(str(temp))
    os.replace(temp, path)
    _fsync_directory(path.parent)


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
    """`metrics` as indented, key-sorted JSON, written atomically."""
    text = json.dumps(metrics, indent=2, sort_keys=True)
    atomic_write(path, lambda temp: Path(temp).write_text(text + "\n", encoding="utf-8"))
