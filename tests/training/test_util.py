"""Device choice (AllenNLP's `cuda_device` values, and a clear error for a GPU that is not there) and
the file mode of atomically written files."""
import os
import stat
from pathlib import Path

import pytest
import torch
from tango.common.exceptions import ConfigurationError

from fmit_plugin.training.util import atomic_write, resolve_device


def test_negative_or_missing_cuda_device_is_the_cpu():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(-1) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_gpu_asked_for_on_a_machine_without_one_is_a_configuration_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigurationError, match="cuda_device=0 was asked for, but no GPU is available"):
        resolve_device(0)


def test_a_gpu_beyond_the_machine_s_count_is_a_configuration_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(1) == torch.device("cuda", 1)
    with pytest.raises(ConfigurationError, match="cuda_device=2, but this machine has 2 GPU"):
        resolve_device(2)


def test_atomic_write_gives_new_files_the_umask_mode_and_keeps_a_replaced_file_s_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    new = tmp_path / "new.json"
    atomic_write(new, lambda temp: Path(temp).write_text("{}"))
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o640)
    atomic_write(kept, lambda temp: Path(temp).write_text("new"))
    assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "new.json"]
