"""
setup.cfg's floors are what the code uses (issue 14): `python_requires` covers the newest standard-library
name the package imports, and `transformers>=` is the first release whose zero-shot post-processing takes
the keywords the `zero_shot_detector` grounder passes. Installing old releases here is not cheap, so the
transformers floor is checked against the installed release's signatures, and the floor value itself is
pinned to the release found by reading the wheels (docs/development.md, "Requirement floors").
"""
import ast
import configparser
import inspect
import re
import sys
from pathlib import Path

import pytest
import transformers
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fmit_plugin"

# Standard-library names that need a newer Python than 3.10, and the release that added them.
NEWER_NAMES = {
    ("typing", "Self"): (3, 11),
    ("typing", "LiteralString"): (3, 11),
    ("typing", "Never"): (3, 11),
    ("typing", "assert_never"): (3, 11),
    ("typing", "override"): (3, 12),
    ("tomllib", None): (3, 11),
}

# 4.49.0 is the first release in which OWL-ViT's and OWLv2's processors have
# post_process_grounded_object_detection(threshold=, text_labels=) and Grounding DINO's takes `threshold`
# (4.48 had only post_process_object_detection for OWL and `box_threshold` for Grounding DINO).
TRANSFORMERS_FLOOR = "4.49.0"


def _setup_options() -> configparser.SectionProxy:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["options"]


def _requirement_floor(name: str) -> str:
    for line in _setup_options()["install_requires"].splitlines():
        match = re.fullmatch(rf"{re.escape(name)}\s*>=\s*([\w.]+)(,.*)?", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"setup.cfg's install_requires has no '{name}>=' floor")


def _python_needed() -> tuple[tuple[int, int], list[str]]:
    needed, reasons = (3, 0), []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            found: list[tuple[str, str | None]] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                found = [(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                found = [(node.value.id, node.attr)]
            for key in found:
                version = NEWER_NAMES.get(key) or NEWER_NAMES.get((key[0], None))
                if version:
                    needed = max(needed, version)
                    reasons.append(f"{path.relative_to(ROOT)}:{node.lineno} {key[0]}.{key[1]}")
    return needed, reasons


def test_python_requires_covers_what_the_package_imports():
    floor = re.fullmatch(r">=\s*(\d+)\.(\d+)", _setup_options()["python_requires"].strip())
    assert floor, f"python_requires should be '>=X.Y', got {_setup_options()['python_requires']!r}"
    declared = (int(floor.group(1)), int(floor.group(2)))
    needed, reasons = _python_needed()
    # backbones.py's `typing.Self` alone needs 3.11: the scan must see it, or it sees nothing.
    assert needed >= (3, 11), reasons
    assert declared == needed, f"python_requires >={declared} but the package needs {needed}: {reasons}"


def test_tools_target_the_python_floor():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    floor = _setup_options()["python_requires"].strip().removeprefix(">=")
    assert f'target-version = "py{floor.replace(".", "")}"' in pyproject  # ruff
    assert f'python_version = "{floor}"' in pyproject  # mypy
    assert sys.version_info >= tuple(int(part) for part in floor.split("."))


def test_transformers_floor_is_the_first_release_with_the_grounding_keywords():
    assert _requirement_floor("transformers") == TRANSFORMERS_FLOOR
    assert Version(transformers.__version__) >= Version(TRANSFORMERS_FLOOR)


def _keywords_the_grounder_passes() -> set[str]:
    """Keywords of the grounder's post-processing call and of its `_boxes(...)` calls, which forward them."""
    tree = ast.parse((PACKAGE / "vision" / "grounders.py").read_text(encoding="utf-8"))
    keywords = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
            "post_process_grounded_object_detection", "_boxes"
        ):
            keywords |= {keyword.arg for keyword in node.keywords if keyword.arg}
    return keywords


@pytest.mark.parametrize(
    ("processor", "model_specific"),
    [
        ("OwlViTProcessor", {"text_labels"}),
        ("Owlv2Processor", {"text_labels"}),
        ("GroundingDinoProcessor", {"input_ids", "text_threshold"}),
    ],
)
def test_installed_post_processing_takes_the_grounders_keywords(processor, model_specific):
    passed = _keywords_the_grounder_passes()
    assert {"threshold", "target_sizes"} | model_specific <= passed
    # The other family's keywords would make this processor's call fail: only check shared and own ones.
    own = {"threshold", "target_sizes"} | model_specific
    signature = inspect.signature(getattr(transformers, processor).post_process_grounded_object_detection)
    assert own <= set(signature.parameters), f"{processor}: {sorted(own - set(signature.parameters))} missing"
