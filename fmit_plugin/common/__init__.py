"""Host pieces shared by commands, readers and models: checks, plugin discovery, archives."""
from fmit_plugin.common.checks import ConfigurationError, check_dimensions_match

__all__ = ["ConfigurationError", "check_dimensions_match"]
