"""One process at a time per directory (issue 16): refused while held, free once the holder dies."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.directory_lock import DirectoryLock, lock_file_for

MODULE = Path(__file__).parents[2] / "fmit_plugin" / "common" / "directory_lock.py"
# The holder loads the module by path: importing the whole package would take a while.
HOLDER = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("directory_lock", {str(MODULE)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.DirectoryLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(300)
"""


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    run = tmp_path / "run"
    with DirectoryLock(run):
        with pytest.raises(ConfigurationError, match=rf"{run} is in use by a running train \(pid {os.getpid()} on "):
            DirectoryLock(run).acquire()
    with DirectoryLock(run):  # released on exit
        pass
    assert lock_file_for(run) == tmp_path / ".run.lock"
    assert not run.exists()  # the lock lives beside the directory: -f can delete it safely


def test_the_lock_of_a_killed_process_blocks_nothing(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigurationError, match=rf"pid {holder.pid} on "):
            DirectoryLock(run).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_file_for(run).exists()  # the stale file stays, naming the dead process...
    with DirectoryLock(run):  # ...and blocks nothing: the kernel dropped the lock with its process
        assert str(os.getpid()) in lock_file_for(run).read_text()
