"""
Plugin discovery as AllenNLP does it: a `.allennlp_plugins` file in the working directory lists one
module per line; `--include-package` adds more. Importing a module runs its `register` decorators.
"""
import importlib
import logging
import os
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path

from tango.common.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

LOCAL_PLUGINS_FILENAME = ".allennlp_plugins"
DEFAULT_PLUGINS = ("fmit_plugin",)


def import_module_and_submodules(package_name: str) -> None:
    """Import `package_name` and, if it is a package, every submodule under it."""
    # The working directory is on the path so that `--include-package my_local_module` works,
    # as it does in AllenNLP.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(package_name)
    except ModuleNotFoundError as error:
        if error.name and package_name.startswith(error.name):
            raise ConfigurationError(
                f"Plugin or --include-package '{package_name}' could not be imported: no module named "
                f"'{error.name}'. Is it installed, or in the working directory {os.getcwd()}?"
            ) from error
        raise
    path = getattr(module, "__path__", None)
    if not path:
        return
    for module_info in pkgutil.walk_packages(path, prefix=package_name + "."):
        if module_info.name.split(".")[-1].startswith("_"):
            continue
        importlib.import_module(module_info.name)


def read_plugins_file(directory: Path) -> list[str]:
    """Module names listed in `directory/.allennlp_plugins` (blank lines and `#` comments ignored)."""
    plugins_file = directory / LOCAL_PLUGINS_FILENAME
    if not plugins_file.is_file():
        return []
    names = []
    for line in plugins_file.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def import_plugins(include_packages: Iterable[str] = ()) -> list[str]:
    """Import the default plugin, the local plugins file's modules and `include_packages`."""
    names: list[str] = []
    for name in [*DEFAULT_PLUGINS, *read_plugins_file(Path.cwd()), *include_packages]:
        if name not in names:
            names.append(name)
    for name in names:
        import_module_and_submodules(name)
        logger.debug("Plugin %s available", name)
    return names
