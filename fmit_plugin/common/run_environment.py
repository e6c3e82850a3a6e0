"""What a run ran on: the versions of the packages that decide its numbers, and its device."""
import os
import platform
from importlib import metadata
from typing import Any, Optional

import torch

# Distribution names of the packages a result depends on (the plugin's own version is added by the
# layers above, which may read fmit_plugin.version).
PACKAGES = ("torch", "transformers", "ai2-tango", "allennlp-light")


def package_versions() -> dict[str, Optional[str]]:
    """Installed versions of `PACKAGES` (`None` for one not installed) and Python's."""
    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device) -> dict[str, Any]:
    """The device a model ran on, with the GPU's name or the host's CPU and thread count."""
    description: dict[str, Any] = {"device": str(device), "platform": platform.platform()}
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
        description["cuda"] = torch.version.cuda
    description["processor"] = platform.processor() or platform.machine()
    description["cpu_count"] = os.cpu_count()
    description["torch_threads"] = torch.get_num_threads()
    return description
