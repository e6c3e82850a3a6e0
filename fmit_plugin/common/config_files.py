"""
Reading a file a config names (a groundings sidecar, say) the way images are read: `stat` first,
so that a FIFO (which would block forever), a device (`/dev/zero` never ends) or a folder is
refused without being opened, a file over the size limit is refused before it is read, and text
that is not UTF-8 is an error naming the file and line, never a bare `UnicodeDecodeError`.
"""
import os
import stat
from typing import Union

from tango.common.exceptions import ConfigurationError

# Sidecars and similar side files are megabytes; a file past this is a wrong path, not data.
DEFAULT_MAX_BYTES = 1 << 30


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path: Union[str, os.PathLike], what: str, max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """The size of `path`, after checking (without opening it) that it is a regular file no larger
    than `max_bytes`; otherwise a `ConfigurationError` saying what `what` (e.g. "groundings sidecar") is."""
    try:
        status = os.stat(path)
    except OSError as error:
        raise ConfigurationError(f"{what} {path} cannot be read: {error.strerror or error}") from error
    if not stat.S_ISREG(status.st_mode):
        raise ConfigurationError(f"{what} {path} is {_kind(status.st_mode)}: only regular files are read")
    if status.st_size > max_bytes:
        raise ConfigurationError(
            f"{what} {path} is {status.st_size:,} bytes, over the limit of {max_bytes:,} bytes: a wrong path? "
            "(raise the limit, max_bytes, if the file is really this large)"
        )
    return status.st_size


def read_regular_file(path: Union[str, os.PathLike], what: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of `path`, checked as `check_regular_file` does (and read no further than the limit,
    should the file grow meanwhile)."""
    check_regular_file(path, what, max_bytes)
    try:
        with open(path, "rb") as handle:
            content = handle.read(max_bytes + 1)
    except OSError as error:
        raise ConfigurationError(f"{what} {path} cannot be read: {error.strerror or error}") from error
    if len(content) > max_bytes:
        raise ConfigurationError(f"{what} {path} grew past the limit of {max_bytes:,} bytes while being read")
    return content


def decode_utf8(content: bytes, path: Union[str, os.PathLike], what: str) -> str:
    """`content` as UTF-8 text; otherwise a `ConfigurationError` naming the file, line and byte."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        column = error.start - (content.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigurationError(
            f"{what} {path}, line {line}: not UTF-8 (byte 0x{content[error.start]:02x} at column {column}); "
            "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
