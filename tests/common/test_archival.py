import tarfile

import pytest
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.train import train_model
from fmit_plugin.common.archival import archive_model, load_archive
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    directory = tmp_path_factory.mktemp("archive") / "run"
    config = tiny_config(tiny_bert)
    config["trainer"]["num_epochs"] = 1
    train_model(Params(config), directory)
    return directory


def test_archive_holds_config_vocabulary_and_weights(run):
    with tarfile.open(run / "model.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"config.json", "weights.th", "vocabulary/labels.txt"} <= names
    assert load_archive(run).model.vocab == load_archive(run / "model.tar.gz").model.vocab


def test_truncated_or_foreign_archives_are_clear_errors(run, tmp_path):
    data = (run / "model.tar.gz").read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigurationError, match="corrupt or truncated"):
        load_archive(tmp_path / "truncated.tar.gz")
    with tarfile.open(tmp_path / "foreign.tar.gz", "w:gz") as tar:
        tar.add(run / "config.json", arcname="config.json")
    with pytest.raises(ConfigurationError, match="not a model archive"):
        load_archive(tmp_path / "foreign.tar.gz")
    with pytest.raises(ConfigurationError, match="not found"):
        load_archive(tmp_path / "nothing.tar.gz")


def test_archive_with_another_label_set_is_rejected(run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / "vocabulary" / "labels.txt").write_text("O\nB-PER\nI-PER\n")
    archive_model(other)
    with pytest.raises(ConfigurationError, match="different label set"):
        load_archive(other / "model.tar.gz")


def test_archiving_needs_a_complete_serialization_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        archive_model(tmp_path)
    assert not (tmp_path / "model.tar.gz").exists()
