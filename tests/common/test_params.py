from typing import Optional

import pytest
from tango.common import FromParams
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.params import check_config_types, load_config

CONFIG = """
local common = import 'lib.libsonnet';
{ data: common.env("FMIT_TEST_DIR", "default/dir"), epochs: common.env_number("FMIT_TEST_EPOCHS", 3),
  model: { encoder: { layers: 1 } } }
"""
LIB = """{
  env(name, default):: local value = std.extVar(name); if value == "" then default else value,
  env_number(name, default):: local value = std.extVar(name); if value == "" then default else std.parseJson(value),
}"""


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.delenv("FMIT_TEST_DIR", raising=False)
    monkeypatch.delenv("FMIT_TEST_EPOCHS", raising=False)
    (tmp_path / "lib.libsonnet").write_text(LIB)
    (tmp_path / "config.jsonnet").write_text(CONFIG)
    return tmp_path / "config.jsonnet"


def test_unset_variables_take_the_config_defaults(config):
    assert load_config(config).as_dict() == {"data": "default/dir", "epochs": 3, "model": {"encoder": {"layers": 1}}}


def test_environment_and_overrides_win(config, monkeypatch):
    monkeypatch.setenv("FMIT_TEST_DIR", "/elsewhere")
    monkeypatch.setenv("FMIT_TEST_EPOCHS", "7")
    params = load_config(config, '{"model.encoder.layers": 3}')
    assert params.as_dict() == {"data": "/elsewhere", "epochs": 7, "model": {"encoder": {"layers": 3}}}


def test_bad_configs_and_overrides_are_named(config, tmp_path):
    with pytest.raises(ConfigurationError, match="not found"):
        load_config(tmp_path / "missing.jsonnet")
    with pytest.raises(ConfigurationError, match="data"):
        load_config(config, '{"data.subdir": 3}')  # "data" is a string, not an object
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_config(config, '{"model": ')
    (tmp_path / "broken.jsonnet").write_text("{ a: }")
    with pytest.raises(ConfigurationError, match="broken.jsonnet"):
        load_config(tmp_path / "broken.jsonnet")


class _Leaf(FromParams):
    def __init__(self, size: int, rate: float = 0.1, name: Optional[str] = None) -> None:
        self.size = size


class _Branch(FromParams):
    def __init__(self, leaf: _Leaf, leaves: Optional[list[_Leaf]] = None, flag: bool = False, anything=None) -> None:
        self.leaf = leaf


@pytest.mark.parametrize(("config", "message"), [
    ({"leaf": {"size": "3"}}, 'top.leaf.size: expected an integer, got "3" (a string)'),
    ({"leaf": {"size": 3, "rate": "fast"}}, 'top.leaf.rate: expected a number, got "fast" (a string)'),
    ({"leaf": {"size": 3, "name": 7}}, "top.leaf.name: expected a string or null, got 7 (an integer)"),
    ({"leaf": {"size": 3}, "leaves": [{"size": 1}, {"size": [2]}]},
     "top.leaves.1.size: expected an integer, got [2] (a list)"),
    ({"leaf": {"size": 3}, "flag": "yes"}, 'top.flag: expected a boolean, got "yes" (a string)'),
])
def test_typed_values_are_checked_against_annotations_naming_the_dotted_key(config, message):
    with pytest.raises(ConfigurationError) as info:
        check_config_types(_Branch, config, "top")
    assert str(info.value) == message


def test_values_that_fit_their_annotations_pass():
    # tango casts booleans to ints and takes ints for floats; unannotated values are not judged.
    check_config_types(_Branch, {"leaf": {"size": True, "rate": 1}, "anything": "x", "unknown_key": "y"}, "top")
