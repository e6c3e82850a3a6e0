"""Host pieces shared by commands, readers and models: checks, plugin discovery, archives."""
from fmit_plugin.common import registrable as _registrable
from fmit_plugin.common.checks import ConfigurationError, check_dimensions_match

_registrable.install()

__all__ = ["ConfigurationError", "check_dimensions_match"]
