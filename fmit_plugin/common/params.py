"""
Loading jsonnet configs with AllenNLP's `-o` overrides.

Configs read data paths and model names with `std.extVar("NAME")`. Jsonnet has no default for an
unset external variable, so an unset one is passed as the empty string and the configs' shared
`env(name, default)` helper (training_configs/common.libsonnet) substitutes their default.
"""
import re
from pathlib import Path
from typing import Any, Optional, Union

from tango.common import Params
from tango.common.exceptions import ConfigurationError
from tango.common.params import parse_overrides

_UNDEFINED_EXT_VAR = re.compile(r"external variable is not defined: (\w+)")
# More than any config needs; it only bounds the retry loop below.
_MAX_EXT_VARS = 64


def load_config(
    config_file: Union[str, Path],
    overrides: Union[str, dict[str, Any]] = "",
    ext_vars: Optional[dict[str, str]] = None,
) -> Params:
    """Read a jsonnet / json config, apply `overrides` (JSON or jsonnet, dotted keys allowed)."""
    path = Path(config_file)
    if not path.is_file():
        raise ConfigurationError(f"Config file not found: {path}")
    ext_vars = dict(ext_vars or {})
    if isinstance(overrides, str) and overrides.strip():
        try:
            overrides = parse_overrides(overrides)
        except (RuntimeError, ValueError) as error:
            raise ConfigurationError(f"Overrides are not valid JSON/jsonnet: {overrides!r} ({error})") from error
    for _ in range(_MAX_EXT_VARS):
        try:
            return Params.from_file(path, overrides, ext_vars=ext_vars)
        except RuntimeError as error:
            missing = _UNDEFINED_EXT_VAR.search(str(error))
            if missing is None or missing.group(1) in ext_vars:
                raise ConfigurationError(f"Could not evaluate config {path}: {error}") from error
            ext_vars[missing.group(1)] = ""
        except ValueError as error:
            # with_overrides names the override keys that match nothing in the config.
            raise ConfigurationError(f"Bad overrides for {path}: {error}") from error
    raise ConfigurationError(f"Config {path} uses more than {_MAX_EXT_VARS} external variables")
