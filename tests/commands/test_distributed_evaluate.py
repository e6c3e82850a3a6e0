"""`torchrun ... -m fmit_plugin evaluate`: two gloo workers score their shares of the batches and
report the figures, and write the prediction lines, of one process."""
import json

import pytest

from tests.commands.distributed_helpers import alone, torchrun
from tests.conftest import TWITTER_FIXTURES, train_tiny


@pytest.fixture(scope="module")
def archive(tiny_bert, tmp_path_factory):
    directory = tmp_path_factory.mktemp("distributed_evaluate") / "run"
    return train_tiny(tiny_bert, directory, num_epochs=3) / "model.tar.gz"


def _evaluate(archive, name, directory):
    # The 12 training tweets in batches of 5: 3 batches, so one worker scores 2 and the other 1.
    return ["evaluate", str(archive), str(TWITTER_FIXTURES / "train.txt"), "--batch-size", "5",
            "--output-file", str(directory / f"{name}.json"),
            "--predictions-output-file", str(directory / f"{name}.jsonl")]


def test_two_workers_report_the_figures_and_predictions_of_one_process(archive, tmp_path):
    single = alone(_evaluate(archive, "one", tmp_path), tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    spread = torchrun(2, _evaluate(archive, "two", tmp_path), tmp_path)
    assert spread.returncode == 0, spread.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert one["f1-measure-overall"] > 0  # the counts are not trivially equal
    loss_one, loss_two = one.pop("loss"), two.pop("loss")
    assert two == one  # every count-based figure, per type and strict, and the fingerprint
    assert loss_two == pytest.approx(loss_one, rel=1e-6)  # batch losses summed in another order
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert len((tmp_path / "one.jsonl").read_text().splitlines()) == 12
    # Rank 0 alone prints the data lines (the file, and that it is the model's own training file) and the table.
    assert spread.stdout.count("data: ") == single.stdout.count("data: ") == 2
    assert spread.stdout.count("\noverall ") == single.stdout.count("\noverall ") == 1
