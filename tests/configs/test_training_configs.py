"""Every shipped config evaluates and builds its reader, vocabulary, model and data loaders."""
from pathlib import Path

import pytest

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
