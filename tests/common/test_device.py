"""Device choice: AllenNLP's `cuda_device` values, and a clear error for a GPU that is not there."""
import pytest
import torch
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.device import resolve_device


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
