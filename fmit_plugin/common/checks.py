"""Configuration checks in AllenNLP's shape, raising tango's `ConfigurationError`."""
from typing import Any

from tango.common.exceptions import ConfigurationError

__all__ = ["ConfigurationError", "check_dimensions_match"]


def check_dimensions_match(
    dimension_1: int, dimension_2: int, dim_1_name: str, dim_2_name: str
) -> None:
    """Raise a `ConfigurationError` naming both sides when two configured dimensions differ."""
    if dimension_1 != dimension_2:
        raise ConfigurationError(
            f"{dim_1_name} must match {dim_2_name}, but got {dimension_1} and {dimension_2} instead"
        )


def require(condition: Any, message: str) -> None:
    """Raise a `ConfigurationError` with `message` unless `condition` holds."""
    if not condition:
        raise ConfigurationError(message)
