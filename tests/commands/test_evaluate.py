"""`allennlp evaluate`: the scored file's fingerprint, and prediction lines in input order, joinable to their tweets."""
import json
import shutil

import pytest

from fmit_plugin.commands.evaluate import evaluate_archive
from fmit_plugin.data import dataset_fingerprint
from fmit_plugin.data.dataset_fingerprint import KnownDatasetVersion, file_sha256
from tests.bad_input_helpers import write_run
from tests.conftest import TWITTER_FIXTURES, train_tiny


@pytest.fixture(scope="module")
def archive(tiny_bert, tmp_path_factory):
    return train_tiny(tiny_bert, tmp_path_factory.mktemp("evaluate") / "run", num_epochs=1) / "model.tar.gz"


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


def test_prediction_lines_are_in_input_order_with_image_id_and_gold_tags(tmp_path):
    run = write_run(tmp_path / "run", {"type": "test_hashing"})
    # Tweets of very different lengths, so that batching by length reorders them.
    blocks, expected = [], []
    for index, length in enumerate([9, 1, 14, 3, 7, 2, 11, 5, 1, 6]):
        words = [f"w{index}_{k}" for k in range(length)]
        tags = ["B-PER" if k == 0 else "O" for k in range(length)]
        blocks.append(f"IMGID:img{index}\n" + "".join(f"{w}\t{t}\n" for w, t in zip(words, tags)))
        expected.append((f"img{index}", words, tags))
    data = tmp_path / "test.txt"
    data.write_text("\n".join(blocks), encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    evaluate_archive(run, data, predictions_output_file=out, batch_size=3)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(line["image_id"], line["words"], line["gold_tags"]) for line in lines] == expected
    first_lines = [1 + sum(len(e[1]) + 2 for e in expected[:index]) for index in range(len(expected))]
    for line, (_, words, _), first in zip(lines, expected, first_lines):
        assert len(line["tags"]) == len(words) and line["source"] == f"{data}:{first}"

