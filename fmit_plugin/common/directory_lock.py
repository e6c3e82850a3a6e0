"""
One process at a time per directory: an exclusive `fcntl.flock` on a lock file beside it.

The lock file sits beside the directory (`runs/.fmit.lock` for `runs/fmit`), not inside it, so
that `train -f` can check the lock before deleting the directory, and a deleted directory cannot
take its lock with it. The kernel drops a `flock` when its process dies however it dies, so the
lock file a crashed run leaves behind blocks nothing. The file holds the owner's pid and host, only
to name it in the refusal. (Hand-written because `filelock`'s message cannot name the owner, and a
blocking wait is the wrong answer here: a second run must be refused at once.)
"""
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Optional, Union

from tango.common.exceptions import ConfigurationError


def lock_file_for(directory: Union[str, os.PathLike]) -> Path:
    directory = Path(directory).absolute()
    return directory.parent / f".{directory.name}.lock"


class DirectoryLock:
    """`with DirectoryLock(dir, "train"):` holds the lock of `dir` or raises a `ConfigurationError`
    naming the process that holds it. `what` says what the directory is for, in that message."""

    def __init__(self, directory: Union[str, os.PathLike], what: str = "train") -> None:
        self.directory = Path(directory)
        self.path = lock_file_for(directory)
        self.what = what
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigurationError(
                f"{self.directory} is in use by a running {self.what} ({owner}; lock {self.path}): "
                "wait for it to end or stop it, or use another serialization directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        self.acquire()
        return self

    def __exit__(self, kind: Optional[type], value: Optional[BaseException], trace: Optional[TracebackType]) -> None:
        self.release()
