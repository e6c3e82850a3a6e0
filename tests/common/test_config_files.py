"""Files a config names are stat-checked before they are opened (issue 16)."""
import os

import pytest
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.config_files import check_regular_file, decode_utf8, read_regular_file


def test_only_regular_files_within_the_limit_are_read(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # opening it would block: stat alone must refuse it
    with pytest.raises(ConfigurationError, match=r"side file .*pipe is a FIFO \(named pipe\): only regular files"):
        read_regular_file(tmp_path / "pipe", "side file")
    with pytest.raises(ConfigurationError, match="is a folder"):
        check_regular_file(tmp_path, "side file")
    with pytest.raises(ConfigurationError, match="cannot be read: No such file or directory"):
        check_regular_file(tmp_path / "absent", "side file")
    (tmp_path / "f.txt").write_bytes(b"12345")
    with pytest.raises(ConfigurationError, match="is 5 bytes, over the limit of 4 bytes"):
        read_regular_file(tmp_path / "f.txt", "side file", max_bytes=4)
    assert read_regular_file(tmp_path / "f.txt", "side file", max_bytes=5) == b"12345"


def test_text_that_is_not_utf8_names_line_byte_and_column():
    with pytest.raises(ConfigurationError, match=r"side file f\.txt, line 2: not UTF-8 \(byte 0xe9 at column 4\)"):
        decode_utf8(b"ok\ncaf\xe9", "f.txt", "side file")  # Latin-1 "café"
    assert decode_utf8("café".encode(), "f.txt", "side file") == "café"
