"""
Docstring conventions (issue 14): every `# Parameters` entry of a class says what the parameter is
(an indented line under `name : type`), a backticked name starting with a vowel takes "an"
("an `ImageBackbone`"), and shapes in prose are written "`(batch, words)`": `# (batch, words)` is
a code comment's notation and stays in code.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted((ROOT / "fmit_plugin").rglob("*.py"))
ENTRY = re.compile(r"^(\w+(?:, \w+)*) : \S")


def _docstrings(path: Path, kinds: tuple[type, ...]) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, kinds):
            doc = ast.get_docstring(node)
            if doc:
                found.append((getattr(node, "name", "<module>"), doc))
    return found


def _undescribed_parameters(doc: str) -> list[str]:
    lines = doc.splitlines()
    if "# Parameters" not in lines:
        return []
    missing = []
    start = lines.index("# Parameters") + 1
    for index in range(start, len(lines)):
        line = lines[index]
        if line.startswith("#"):
            break  # the next section
        match = ENTRY.match(line)
        if match:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if not following.startswith("    ") or not following.strip():
                missing.append(match.group(1))
    return missing


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_every_parameter_entry_is_described(path):
    missing = {
        name: entries for name, doc in _docstrings(path, (ast.ClassDef,)) if (entries := _undescribed_parameters(doc))
    }
    assert not missing, f"{_name(path)}: '# Parameters' entries without a description: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_backticked_names_starting_with_a_vowel_take_an(path):
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    wrong = [(name, match) for name, doc in _docstrings(path, kinds) for match in re.findall(r"\ba `[AEIOU]\w*`", doc)]
    assert not wrong, wrong


@pytest.mark.parametrize(
    "path",
    MODULES,
    ids=_name,
)
def test_shapes_in_docstrings_are_written_without_the_hash(path):
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    wrong = [(name, line.strip()) for name, doc in _docstrings(path, kinds) for line in doc.splitlines()
             if re.search(r"#\s*\(", line)]
    assert not wrong, f"{_name(path)}: write shapes as `(batch, words)` in docstrings: {wrong}"


def test_the_checks_see_what_they_look_for():
    assert _undescribed_parameters("# Parameters\n\nvocab : `Vocabulary`\nx : `int`\n    An int.\n") == ["vocab"]
    assert _undescribed_parameters("# Parameters\n\nx : `int`, optional (default = `1`)\n    One.\n") == []
    assert re.findall(r"\ba `[AEIOU]\w*`", 'Registered as a `ImageBackbone` with name "x".')
