"""
The package's imports run only downward. The layer order, bottom first, is written here and in
docs/development.md ("Layers"): a module may import its own subpackage and any subpackage of a
lower layer, never one of its own layer or above. The test parses every module's imports (`ast`,
function-level imports included), so it holds however an import is written.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fmit_plugin"

LAYERS = [
    {"version", "common"},  # host pieces: config loading, registries, files, progress, devices, distribution
    {"vision"},  # images, noun phrases, grounders, backbones, feature store, visual objects
    {"data", "synthetic"},  # readers, instances, BIO spans, vocabulary, batching; the synthetic generator
    {"metrics"},  # span F1, below the models that update it
    {"modules"},  # embedders, lattice, fusion, encoders, tagging head
    {"models"},  # models and their archives
    {"training"},  # trainer, optimizers, evaluation loop, run logs
    {"predictors", "visualization"},  # JSON predictor; prediction pictures
    {"commands"},  # the `allennlp` entry point and its subcommands
    {"demo", "__main__", ""},  # the demo, `python -m fmit_plugin` and the package root, which import all
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def _subpackage(module_path: Path) -> str:
    """`fmit_plugin/data/twitter_mner.py` -> "data"; `fmit_plugin/version.py` -> "version"; the root -> ""."""
    parts = module_path.relative_to(PACKAGE).with_suffix("").parts
    return "" if parts == ("__init__",) else parts[0]


def _imported_subpackages(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, subpackage) of every `fmit_plugin` import; "" for the package root itself."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "fmit_plugin":  # `from fmit_plugin import commands`: each name is a subpackage
                names = [f"fmit_plugin.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "fmit_plugin":
                sub = parts[1] if len(parts) > 1 else ""
                found.append((node.lineno, "" if sub.startswith("__") and sub != "__main__" else sub))
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_subpackage_has_a_layer():
    assert {_subpackage(path) for path in _modules()} <= set(LAYER_OF)


def _upward_imports(own: str, source: str, shown: str) -> list[str]:
    return [
        f"{shown}:{line} imports fmit_plugin.{target or '(root)'} (layer {LAYER_OF.get(target, '?')}) "
        f"from layer {LAYER_OF[own]} ({own or 'root'})"
        for line, target in _imported_subpackages(ast.parse(source))
        if target != own and LAYER_OF.get(target, len(LAYERS)) >= LAYER_OF[own]
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_run_downward(path):
    wrong = _upward_imports(_subpackage(path), path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert not wrong, "\n".join(wrong)


def test_the_check_finds_upward_and_same_layer_imports_wherever_they_are_written():
    source = (
        "from fmit_plugin.common.file_utils import atomic_write\n"
        "import fmit_plugin.models.archival\n"
        "def f():\n    from fmit_plugin.training.trainer import Trainer\n"
        "from fmit_plugin import __version__\n"
        "from fmit_plugin.data.instance import TaggingInstance\n"
    )
    wrong = _upward_imports("vision", source, "x.py")
    assert [line.split(" ")[0] for line in wrong] == ["x.py:2", "x.py:5", "x.py:6", "x.py:4"]
    assert _upward_imports("data", "from fmit_plugin.synthetic.generator import generate_dataset", "y.py")
    assert _upward_imports("commands", source, "z.py") == [
        "z.py:5 imports fmit_plugin.(root) (layer 9) from layer 8 (commands)"
    ]
