"""
Registry look-ups as AllenNLP does them: names come from imported plugins, nothing else.

On a `"type"` it does not know, tango's `Registrable.search_modules` imports every `*.py` file and
package in the working directory, then every tango integration, hoping one registers the name. That
runs arbitrary code from wherever the user stands, is slow, and crashes with an unrelated traceback
when an integration's extra is missing (`No module named 'datasets'`). Here the search only
imports the tango integration a `"prefix::name"` names; plugins come from `.allennlp_plugins` and
`--include-package`. An unknown name then fails in `Params.pop_choice`, whose message lists the
registered choices ("'crf_tagerr' not in acceptable choices for model.type: ['crf_tagger', ...]").
"""
import importlib
from typing import Any

from tango.common import Registrable


def _search_named_integration_only(cls: Any, name: str) -> None:
    if "::" not in name:
        return None
    integration = name.split("::", 1)[0]
    if not integration.isidentifier():
        return None
    try:
        importlib.import_module(f"tango.integrations.{integration}")
    except ImportError:  # not an integration, or one whose extra is not installed
        pass
    return None


def install() -> None:
    """Replace tango's module search (idempotent; done when `fmit_plugin.common` is imported)."""
    Registrable.search_modules = classmethod(_search_named_integration_only)  # type: ignore[method-assign,assignment]
