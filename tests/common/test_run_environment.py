from importlib import metadata

import torch

from fmit_plugin.common.run_environment import PACKAGES, device_description, package_versions


def test_package_versions_name_every_package_the_numbers_depend_on():
    versions = package_versions()
    assert versions["torch"] == metadata.version("torch")
    assert versions["transformers"] == metadata.version("transformers")
    assert set(PACKAGES) <= set(versions) and all(versions[name] for name in PACKAGES)


def test_device_description_of_the_cpu():
    description = device_description(torch.device("cpu"))
    assert description["device"] == "cpu"
    assert description["torch_threads"] == torch.get_num_threads()
    assert "gpu" not in description
