import json
import shutil

import pytest
from tango.common import Params

from fmit_plugin.commands.evaluate import evaluate_archive
from fmit_plugin.commands.train import train_model
from fmit_plugin.data import dataset_fingerprint
from fmit_plugin.data.dataset_fingerprint import KnownDatasetVersion, file_sha256
from tests.conftest import TWITTER_FIXTURES, tiny_config


@pytest.fixture(scope="module")
def archive(tiny_bert, tmp_path_factory):
    directory = tmp_path_factory.mktemp("evaluate") / "run"
    config = tiny_config(tiny_bert)
    config["trainer"]["num_epochs"] = 1
    train_model(Params(config), directory)
    return directory / "model.tar.gz"


def test_evaluate_prints_and_writes_the_fingerprint_and_known_version(archive, tmp_path, monkeypatch, capsys):
    data = tmp_path / "copy_of_test.txt"
    shutil.copyfile(TWITTER_FIXTURES / "test.txt", data)
    # a test-only known version: the fixture file's hash
    known = KnownDatasetVersion("fixture test (test-only)", 0, {}, sha256=file_sha256(data), source="tests")
    monkeypatch.setattr(dataset_fingerprint, "KNOWN_VERSIONS", [known])
    metrics = evaluate_archive(archive, data, output_file=tmp_path / "metrics.json")
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "metrics.json").read_text())["input_fingerprint"]
    assert written == metrics["input_fingerprint"]
    assert written["sha256"] == file_sha256(data) and written["tweets"] > 0
    assert written["known_version"] == {"name": "fixture test (test-only)", "match": "sha256", "source": "tests"}
    assert f"SHA-256 {written['sha256']}" in printed and "fixture test (test-only): the very file" in printed
    # a copy of the model's own test file (the fixture's valid.txt is the same bytes): the record knows its hash
    assert written["seen_by_model_as"] == ["validation", "test"]
    assert "the model's own validation and test file" in printed


def test_evaluate_of_an_unknown_file_says_so(archive, tmp_path, capsys):
    data = tmp_path / "edited.txt"
    data.write_bytes((TWITTER_FIXTURES / "test.txt").read_bytes().replace(b"\t", b"q\t", 1))
    metrics = evaluate_archive(archive, data)
    assert metrics["input_fingerprint"]["known_version"] is None
    assert metrics["input_fingerprint"]["seen_by_model_as"] == []
    printed = capsys.readouterr().out
    assert "no known dataset version" in printed and "the model's own" not in printed
