"""The `allennlp` console script, run as a user would: subprocesses from a temp working directory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TWITTER_FIXTURES, tiny_config

ALLENNLP = str(Path(sys.executable).parent / "allennlp")

LOCAL_PLUGIN = '''
from fmit_plugin.commands.subcommand import Subcommand


@Subcommand.register("hello")
class Hello(Subcommand):
    """Registered as a `Subcommand` with name "hello"."""

    def add_subparser(self, parser):
        subparser = parser.add_parser(self.name, help="say hello")
        subparser.set_defaults(func=lambda args: print("hello from a plugin"))
        return subparser
'''


def _run(args, cwd, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FMIT_FILE_FRIENDLY_LOGGING": "1"}
    result = subprocess.run([ALLENNLP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"allennlp {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    (directory / ".allennlp_plugins").write_text("fmit_plugin\nlocal_plugin\n")
    (directory / "local_plugin.py").write_text(LOCAL_PLUGIN)
    return directory


@pytest.fixture(scope="module")
def trained(workdir, tmp_path_factory):
    from tests.conftest import fixture_texts, write_tiny_bert

    bert = write_tiny_bert(tmp_path_factory.mktemp("cli_bert"), fixture_texts())
    config = tiny_config(bert)
    (workdir / "config.json").write_text(json.dumps(config))
    _run(["train", "config.json", "-s", "runs/tiny", "-o", '{"trainer.num_epochs": 1}'], workdir)
    return workdir / "runs" / "tiny"


def test_train_writes_an_archive_and_honours_overrides(trained):
    assert (trained / "model.tar.gz").is_file()
    assert sorted(p.name for p in trained.glob("metrics_epoch_*.json")) == ["metrics_epoch_0.json"]
    assert json.loads((trained / "config.json").read_text())["trainer"]["num_epochs"] == 1


def test_plugins_file_adds_subcommands(workdir):
    assert _run(["hello"], workdir).stdout.strip() == "hello from a plugin"
    assert "hello" not in _run(["--help"], workdir.parent).stdout  # no plugins file there


def test_evaluate_prints_and_writes_per_type_metrics(trained, workdir):
    result = _run(["evaluate", str(trained / "model.tar.gz"), str(TWITTER_FIXTURES / "test.txt"),
                   "--output-file", "eval.json", "--predictions-output-file", "eval_predictions.jsonl"], workdir)
    assert "overall" in result.stdout and "precision" in result.stdout
    metrics = json.loads((workdir / "eval.json").read_text())
    for key in ("precision-overall", "recall-overall", "f1-measure-overall", "f1-measure-strict-overall"):
        assert 0.0 <= metrics[key] <= 1.0
    predictions = (workdir / "eval_predictions.jsonl").read_text().splitlines()
    test_tweets = (TWITTER_FIXTURES / "test.txt").read_text().count("IMGID:")
    assert len(predictions) == test_tweets


def test_predict_writes_one_line_per_input_line_in_order(trained, workdir):
    lines = [
        {"id": 1, "tokens": ["Obama", "visits", "Paris"]},
        {"id": 2, "sentence": "Flying to New York with @bob !"},
        "this line is not json",
        {"id": 4, "text": "no tokens key"},
        {"id": 5, "tokens": []},
    ]
    (workdir / "input.jsonl").write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    result = _run(["predict", str(trained / "model.tar.gz"), "input.jsonl", "--output-file", "out.jsonl",
                   "--batch-size", "2", "--silent"], workdir, check=False)
    assert result.returncode == 1 and "2 input lines could not be tagged" in result.stderr
    outputs = [json.loads(line) for line in (workdir / "out.jsonl").read_text().splitlines()]
    assert len(outputs) == len(lines)
    assert [o.get("id") for o in outputs] == [1, 2, None, 4, 5]
    assert outputs[0]["tokens"] == ["Obama", "visits", "Paris"] and len(outputs[0]["tags"]) == 3
    assert outputs[1]["tokens"] == ["Flying", "to", "New", "York", "with", "@bob", "!"]
    assert "error" in outputs[2] and outputs[2]["line"] == 3
    assert "error" in outputs[3] and outputs[3]["line"] == 4
    assert outputs[4]["tags"] == []
    for output in outputs[:2]:
        for entity in output["entities"]:
            assert set(entity) == {"text", "type", "start", "end", "confidence"}
            assert entity["text"] == " ".join(output["tokens"][entity["start"] : entity["end"]])
    skipped = _run(["predict", str(trained / "model.tar.gz"), "input.jsonl", "--skip-errors"], workdir)
    assert len(skipped.stdout.strip().splitlines()) == len(lines)


def test_user_errors_are_one_line_without_traceback(trained, workdir):
    result = _run(["train", "config.json", "-s", "runs/tiny"], workdir, check=False)
    assert result.returncode == 2
    assert "already exists and is not empty" in result.stderr and "Traceback" not in result.stderr
    result = _run(["evaluate", str(trained / "model.tar.gz"), "missing.txt"], workdir, check=False)
    assert result.returncode == 2 and "missing.txt" in result.stderr and "Traceback" not in result.stderr


def test_include_package_and_dry_run(trained, workdir, tmp_path):
    (tmp_path / "other_plugin.py").write_text(LOCAL_PLUGIN.replace('"hello"', '"hello2"'))
    assert "hello from a plugin" in _run(["hello2", "--include-package", "other_plugin"], tmp_path).stdout
    result = _run(["train", str(workdir / "config.json"), "-s", str(tmp_path / "dry"), "--dry-run"], tmp_path)
    assert "Config is valid" in result.stdout
