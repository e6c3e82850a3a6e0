"""Running a command under torchrun with two gloo CPU workers, as the training DDP test does."""
import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "FMIT_FILE_FRIENDLY_LOGGING": "1", "OMP_NUM_THREADS": "1"}


def torchrun(workers: int, arguments: list[str], cwd: Path, script: str = "") -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node WORKERS -m fmit_plugin ARGUMENTS` (or `python -c
    SCRIPT ARGUMENTS` as each worker, for a worker that is made to fail)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(workers)]
    if script:
        path = cwd / "worker.py"
        path.write_text(script)
        command = [*launcher, str(path), *arguments]
    else:
        command = [*launcher, "-m", "fmit_plugin", *arguments]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, cwd=cwd)


def alone(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The same command in one process, without torchrun."""
    command = [sys.executable, "-m", "fmit_plugin", *arguments]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, cwd=cwd)
