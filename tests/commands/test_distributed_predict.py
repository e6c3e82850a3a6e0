"""`torchrun ... -m fmit_plugin predict`: two gloo workers write what one process writes, byte for byte."""
import json

import pytest
from tango.common import Params

from fmit_plugin.commands.train import train_model
from tests.commands.distributed_helpers import alone, torchrun, visual_reader, write_image_tweets
from tests.conftest import tiny_config, train_tiny

WORDS = "Zorp visits Blix today with Ana Lee at Quib and the team".split()


@pytest.fixture(scope="module")
def archive(tiny_bert, tmp_path_factory):
    directory = tmp_path_factory.mktemp("distributed_predict") / "run"
    return train_tiny(tiny_bert, directory, num_epochs=1) / "model.tar.gz"


@pytest.fixture
def input_file(tmp_path):
    """23 lines of many lengths (batching by length reorders them inside a window), with a blank
    line, a broken one and one with no tokens: 6 windows of 4 lines, the last one short."""
    lines = [json.dumps({"id": f"t{n}", "tokens": WORDS[: 1 + (n * 7) % len(WORDS)]}) for n in range(20)]
    lines[5] = ""
    lines[11] = "{not json"
    lines.insert(15, json.dumps({"id": "no-tokens"}))
    lines += [json.dumps({"sentence": "Ana Lee visits Quib"}), json.dumps({"tokens": ["Blix"]})]
    path = tmp_path / "input.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _predict(archive, input_file, output, *extra):
    return ["predict", str(archive), str(input_file), "--output-file", str(output), "--batch-size", "2",
            "--sort-window", "4", "--silent", *extra]


def test_two_workers_write_the_output_of_one_process_byte_for_byte_and_count_its_errors(
    archive, input_file, tmp_path
):
    single = alone(_predict(archive, input_file, tmp_path / "one.jsonl"), tmp_path)
    spread = torchrun(2, _predict(archive, input_file, tmp_path / "two.jsonl"), tmp_path)
    expected = (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "two.jsonl").read_bytes() == expected
    lines = [json.loads(line) for line in expected.decode("utf-8").splitlines()]
    assert len(lines) == 23 and [line.get("line") for line in lines if "error" in line] == [6, 12, 16]
    assert [line["id"] for line in lines[:3]] == ["t0", "t1", "t2"] and lines[-1]["tokens"] == ["Blix"]
    # Both exit non-zero for the 3 bad lines, which the 2-worker run reports once (from rank 0).
    message = "3 input lines could not be tagged"
    assert single.returncode == 1 and message in single.stderr, single.stderr[-3000:]
    assert spread.returncode != 0 and spread.stderr.count(message) == 1, spread.stderr[-3000:]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_with_the_dataset_reader_and_visual_objects_two_workers_write_the_output_of_one(tiny_bert, tmp_path):
    # Each worker extracts the objects of its own windows only; the lines are those of one process.
    write_image_tweets(tmp_path)
    config = tiny_config(tiny_bert)
    config["dataset_reader"] = visual_reader(tmp_path, "store.sqlite")
    for split in ("train", "validation", "test"):
        config[f"{split}_data_path"] = str(tmp_path / "train.txt")
    config["trainer"]["num_epochs"] = 1
    train_model(Params(config), tmp_path / "run")
    (tmp_path / "store.sqlite").unlink()  # predict reads the archive's store read-only: nothing in it now
    archive, data = tmp_path / "run" / "model.tar.gz", tmp_path / "train.txt"
    arguments = ["--use-dataset-reader", "--sort-window", "2"]
    single = alone(_predict(archive, data, tmp_path / "one.jsonl", *arguments), tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    spread = torchrun(2, _predict(archive, data, tmp_path / "two.jsonl", *arguments), tmp_path)
    assert spread.returncode == 0, spread.stderr[-3000:]
    expected = (tmp_path / "one.jsonl").read_bytes()
    assert (tmp_path / "two.jsonl").read_bytes() == expected
    lines = [json.loads(line) for line in expected.decode("utf-8").splitlines()]
    assert [line["image"].rsplit("/", 1)[-1] for line in lines] == [f"{n}.jpg" for n in range(6)] + ["6"]
    assert all(line["objects"] for line in lines)  # the whole image at least, for every tweet
    assert sum(len(line["objects"]) > 1 for line in lines) == 3  # the sidecar's regions


def test_stdin_is_refused_with_one_line_naming_the_worker(archive, tmp_path):
    result = torchrun(2, ["predict", str(archive), "-", "--silent"], tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert sorted(errors) == [
        f"error: worker rank {rank} of 2: ConfigurationError: A distributed predict reads its input file in every "
        "worker: - is stdin or a pipe; give a regular file" for rank in (0, 1)
    ]


KILLED_WORKER = """
import os, signal, sys
from fmit_plugin.commands import predict

real = predict._predict_batch
calls = []

def dying(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 2:  # rank 1's second window
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

predict._predict_batch = dying
from fmit_plugin.__main__ import run
sys.argv = ["allennlp", *sys.argv[1:]]
run()
"""


def test_a_killed_worker_fails_the_run_naming_it_and_leaves_no_output(archive, input_file, tmp_path):
    output = tmp_path / "out" / "two.jsonl"
    output.parent.mkdir()
    result = torchrun(2, _predict(archive, input_file, output, "--skip-errors"), tmp_path, script=KILLED_WORKER)
    assert result.returncode != 0
    # torchrun's report of the first failure names the killed worker.
    assert "rank      : 1 (local_rank: 1)" in result.stderr and "Signal 9 (SIGKILL)" in result.stderr
    assert list(output.parent.iterdir()) == []  # neither the output nor its temporary file
