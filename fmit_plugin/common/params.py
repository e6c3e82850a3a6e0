"""
Loading jsonnet configs with AllenNLP's `-o` overrides.

Configs read data paths and model names with `std.extVar("NAME")`. Jsonnet has no default for an
unset external variable, so an unset one is passed as the empty string and the configs' shared
`env(name, default)` helper (training_configs/common.libsonnet) substitutes their default.
"""
import collections.abc
import inspect
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

import torch
from tango.common import FromParams, Lazy, Params, Registrable
from tango.common.exceptions import ConfigurationError
from tango.common.from_params import infer_method_params
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
    unset: list[str] = []
    for _ in range(_MAX_EXT_VARS):
        try:
            params = Params.from_file(path, overrides, ext_vars=ext_vars)
        except RuntimeError as error:
            missing = _UNDEFINED_EXT_VAR.search(str(error))
            if missing is None or missing.group(1) in ext_vars:
                raise ConfigurationError(f"Could not evaluate config {path}: {error}") from error
            ext_vars[missing.group(1)] = ""
            unset.append(missing.group(1))
            continue
        except ValueError as error:
            # with_overrides names the override keys that match nothing in the config.
            raise ConfigurationError(f"Bad overrides for {path}: {error}") from error
        if unset:
            _refuse_paths_of_unset_variables(path, overrides, ext_vars, unset, params)
        return params
    raise ConfigurationError(f"Config {path} uses more than {_MAX_EXT_VARS} external variables")


_UNSET_MARKER = re.compile(r"<unset (\w+)>")
# Keys whose value is a file or folder: empty, they can only be a mistake.
_PATH_KEY = re.compile(r"(^|_)(path|dir|file)$")


def _refuse_paths_of_unset_variables(
    path: Path, overrides: Any, ext_vars: dict[str, str], unset: list[str], params: Params
) -> None:
    """A path that came out empty because the `std.extVar` it is read from is unset would fail
    later as "file not found: " (nothing after the colon). Evaluated again with each unset variable
    set to a marker (a JSON string, so that `std.parseJson` of it still works), the markers show
    which variables an empty path came from, and the error names them."""
    marked = dict(ext_vars, **{name: json.dumps(f"<unset {name}>") for name in unset})
    try:
        traced = Params.from_file(path, overrides, ext_vars=marked).as_flat_dict()
    except Exception:  # noqa: BLE001 - the markers may break the config's own logic: nothing to explain then
        return
    for key, value in params.as_flat_dict().items():
        if value != "" or not _PATH_KEY.search(key.rsplit(".", 1)[-1]):
            continue
        names = _UNSET_MARKER.findall(str(traced.get(key, "")))
        if names:
            variables = ", ".join(dict.fromkeys(names))
            raise ConfigurationError(
                f"{key} in {path} is empty: it is read from std.extVar({variables}), which is not set. "
                f"Set it, e.g. `{names[0]}=/path/to/... allennlp train {path} ...`, or put the path in the config"
            )


# --------------------------------------------------------------------------- typed parameters
# tango's FromParams refuses a string where a number belongs with a TypeError that names only the
# argument ("Expected num_epochs to be int"), or not at all (torch optimizers take `lr` as
# `Union[float, Tensor]` and fail deep inside with "'<=' not supported"). This walks the same
# constructor annotations tango builds from, before anything is built, so the error names the
# dotted key, the expected type and the value. Only leaves JSON can hold are checked (int, float,
# bool, str, None); a nested registrable block is followed through its "type".

_ANYTHING = None  # an annotation this check cannot judge: any value passes


def _json_kinds(annotation: Any) -> Optional[set[type]]:
    """The JSON value types an annotation accepts (`None`: anything)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return _ANYTHING
    if annotation is type(None):
        return {type(None)}
    if annotation is bool:
        return {bool}
    if annotation is int:
        return {int}
    if annotation is float:
        return {int, float}
    if annotation in (str, Path):
        return {str}
    if annotation is torch.Tensor:
        return set()  # a config cannot hold one: only the Union's other members count
    origin = typing.get_origin(annotation)
    if origin is Union or isinstance(annotation, types.UnionType):
        kinds: set[type] = set()
        for member in typing.get_args(annotation):
            member_kinds = _json_kinds(member)
            if member_kinds is _ANYTHING:
                return _ANYTHING
            kinds |= member_kinds
        return kinds
    if inspect.isclass(annotation) and issubclass(annotation, FromParams):
        return {dict, str}  # a block, or a registered name alone
    if origin is Lazy:
        return {dict, str}
    return _ANYTHING


_KIND_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               dict: "a block", type(None): "null"}


def _expected(kinds: set[type]) -> str:
    names = [_KIND_NAMES[kind] for kind in (float, int, bool, str, dict, type(None)) if kind in kinds]
    if "a number" in names and "an integer" in names:
        names.remove("an integer")
    return " or ".join(names)


def _constructed_class(annotation: Any) -> Optional[type]:
    """The FromParams class a nested block of this annotation builds, if any."""
    origin = typing.get_origin(annotation)
    if origin is Lazy:
        return _constructed_class(typing.get_args(annotation)[0])
    if origin is Union or isinstance(annotation, types.UnionType):
        classes = [c for c in map(_constructed_class, typing.get_args(annotation)) if c is not None]
        return classes[0] if len(classes) == 1 else None
    if inspect.isclass(annotation) and issubclass(annotation, FromParams):
        return annotation
    return None


def _element_class(annotation: Any) -> Optional[type]:
    """The FromParams class of the items of a (optional) list / dict annotation, if any."""
    if typing.get_origin(annotation) is Union or isinstance(annotation, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) != 1:
            return None
        annotation = members[0]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, collections.abc.Sequence, collections.abc.Iterable, dict, collections.abc.Mapping) and args:
        return _constructed_class(args[-1])
    return None


def check_config_types(cls: type, config: Any, key: str, skip: tuple[str, ...] = ()) -> None:
    """Raise a `ConfigurationError` naming `key.sub.key`, the expected type and the value where a
    value of `config` (the block `cls.from_params` will get) does not fit its constructor annotation."""
    if isinstance(config, Params):
        config = config.as_dict(quiet=True)
    if not isinstance(config, dict):
        return
    if issubclass(cls, Registrable):
        name = config.get("type", cls.default_implementation)
        registry = Registrable._registry.get(cls, {})
        if not isinstance(name, str) or name not in registry:
            return  # an unknown or missing type: tango's own message lists the choices
        cls, constructor_name = registry[name]
    else:
        constructor_name = None
    constructor = getattr(cls, constructor_name or "__init__")
    try:
        parameters = infer_method_params(cls, constructor)
    except (TypeError, ValueError):  # unresolvable annotations: leave the checks to tango
        return
    for name, value in config.items():
        if name == "type" or name in skip or name not in parameters:
            continue
        annotation = parameters[name].annotation
        dotted = f"{key}.{name}"
        kinds = _json_kinds(annotation)
        # tango casts booleans to ints, so a boolean passes where an integer is expected.
        if kinds is not _ANYTHING and type(value) not in kinds and not (type(value) is bool and int in kinds):
            shown = _KIND_NAMES.get(type(value), "a list")
            raise ConfigurationError(f"{dotted}: expected {_expected(kinds)}, got {json.dumps(value)} ({shown})")
        nested = _constructed_class(annotation)
        if nested is not None and isinstance(value, dict):
            check_config_types(nested, value, dotted)
        element = _element_class(annotation)
        if element is not None and isinstance(value, list):
            for index, item in enumerate(value):
                check_config_types(element, item, f"{dotted}.{index}")
        elif element is not None and isinstance(value, dict):
            for item_key, item in value.items():
                check_config_types(element, item, f"{dotted}.{item_key}")
