import pytest
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.params import load_config

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
