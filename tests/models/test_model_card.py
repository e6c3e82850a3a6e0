import json
import tarfile

import pytest

from fmit_plugin.common.run_environment import PACKAGES
from fmit_plugin.data.dataset_fingerprint import file_sha256
from fmit_plugin.models.archival import read_archive_meta
from fmit_plugin.models.model_card import render_model_card
from fmit_plugin.version import VERSION
from tests.conftest import TWITTER_FIXTURES, train_tiny


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    return train_tiny(tiny_bert, tmp_path_factory.mktemp("card") / "run", num_epochs=1, seed=7)


def test_archive_meta_and_metrics_hold_the_training_record(run):
    with tarfile.open(run / "model.tar.gz") as tar:
        meta = json.load(tar.extractfile("meta.json"))
    record = meta["training_record"]
    assert json.loads((run / "metrics.json").read_text())["training_record"] == record
    assert read_archive_meta(run / "model.tar.gz") == meta
    for split, name in (("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        fingerprint = record["datasets"][split]
        assert fingerprint["sha256"] == file_sha256(TWITTER_FIXTURES / name)
        assert fingerprint["tweets"] > 0 and fingerprint["tokens"] > fingerprint["tweets"]
        assert fingerprint["entities"] == sum(fingerprint["entities_by_type"].values()) > 0
        assert sum(fingerprint["tags"].values()) == fingerprint["tokens"]
    # the config as run: after overrides, with the data paths resolved
    assert record["config"] == json.loads((run / "config.json").read_text())
    assert record["seed"] == 7
    assert set(PACKAGES) | {"python"} <= set(record["packages"]) and record["packages"]["fmit-plugin"] == VERSION
    assert record["device"]["device"] == "cpu"
    assert record["best_epoch"] == 0 and 0 <= record["best_validation"]["f1-measure-overall"] <= 1


def test_model_card_shows_every_field(run):
    meta = read_archive_meta(run / "model.tar.gz")
    card = render_model_card(meta, "model.tar.gz")
    record = meta["training_record"]
    assert card.startswith("# Model card: model.tar.gz")
    assert meta["weights_sha256"] in card and ", ".join(meta["labels"]["labels"]) in card
    for split in ("train", "validation", "test"):
        fingerprint = record["datasets"][split]
        row = next(line for line in card.splitlines() if line.startswith(f"| {split} |"))
        for value in (fingerprint["path"], fingerprint["sha256"], fingerprint["bytes"], fingerprint["tweets"],
                      fingerprint["tokens"], fingerprint["entities"], *fingerprint["entities_by_type"].values(),
                      *fingerprint["tags"]):
            assert str(value) in row, (split, value)
        assert "no known dataset version" in row
    for package, version in record["packages"].items():
        assert f"| {package} | {version} |" in card
    for key, value in record["device"].items():
        assert f"| {key} | {value} |" in card
    assert json.dumps(record["config"], indent=2, sort_keys=True) in card
    assert "seed 7" in card and "crf_tagger" in card
    # a serialization directory's card is the same record
    assert render_model_card(read_archive_meta(run), "x").count(record["datasets"]["train"]["sha256"]) == 1


def test_card_of_an_archive_without_a_record_says_so():
    card = render_model_card({"archive_format": 1, "labels": {"labels": ["O"]}}, "old.tar.gz")
    assert "No training record" in card
