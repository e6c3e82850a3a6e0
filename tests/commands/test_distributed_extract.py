"""`torchrun ... -m fmit_plugin extract-visual-objects`: two gloo workers fill the store one process
fills, entry by entry; a rerun computes only what the store lacks; `--merge` joins machines' stores."""
import json
import sqlite3

import pytest

from fmit_plugin.commands.extract_visual_objects import extract_visual_objects, merge_stores
from tests.commands.distributed_helpers import alone, torchrun, visual_reader, write_image_tweets


@pytest.fixture
def dataset(tmp_path):
    write_image_tweets(tmp_path)
    return tmp_path


def _config(dataset, store, data="train.txt"):
    config = {"dataset_reader": visual_reader(dataset, store), "train_data_path": str(dataset / data)}
    path = dataset / f"{store}.{data}.json"
    path.write_text(json.dumps(config))
    return path


def _entries(path):
    with sqlite3.connect(path) as connection:
        return dict((row[0], row[1:]) for row in connection.execute("SELECT key, regions, dim, features FROM objects"))


def test_two_workers_fill_the_store_of_one_process_and_a_rerun_reads_it(dataset):
    single = alone(["extract-visual-objects", str(_config(dataset, "one.sqlite")), "--splits", "train"], dataset)
    assert single.returncode == 0, single.stderr[-3000:]
    # Three tweets already in the two-worker store, as a run that was stopped would leave them.
    first = alone(["extract-visual-objects", str(_config(dataset, "two.sqlite", "first_three.txt"))], dataset)
    assert first.returncode == 0, first.stderr[-3000:]
    spread = torchrun(2, ["extract-visual-objects", str(_config(dataset, "two.sqlite")), "--splits", "train"],
                      dataset)
    assert spread.returncode == 0, spread.stderr[-3000:]
    expected = _entries(dataset / "one.sqlite")
    assert len(expected) == 7
    assert _entries(dataset / "two.sqlite") == expected  # the same keys, regions and feature bytes
    # The summary sums both workers, printed once: 7 tweets, the 3 stored ones read, not computed.
    assert "train (" in single.stdout and "visual objects: 7 tweets (0 from the store)" in single.stdout
    summaries = [line for line in spread.stdout.splitlines() if line.startswith("train (")]
    assert len(summaries) == 1 and "visual objects: 7 tweets (3 from the store)" in summaries[0]
    assert "images: 5 read, 2 empty" in summaries[0] and "images: 5 read, 2 empty" in single.stdout


def test_merge_joins_the_stores_of_two_machines_into_the_store_of_one(dataset, capsys):
    extract_visual_objects(str(_config(dataset, "one.sqlite")), splits=("train",))
    extract_visual_objects(str(_config(dataset, "machine_a.sqlite", "first_three.txt")), splits=("train",))
    extract_visual_objects(str(_config(dataset, "machine_b.sqlite", "last_four.txt")), splits=("train",))
    capsys.readouterr()
    merge_stores(str(_config(dataset, "merged.sqlite")), [str(dataset / "machine_a.sqlite"),
                                                          str(dataset / "machine_b.sqlite")])
    printed = capsys.readouterr().out
    assert "3 entries added from" in printed and "4 entries added from" in printed
    assert _entries(dataset / "merged.sqlite") == _entries(dataset / "one.sqlite")
    # Merging again adds nothing: entries both stores hold are the same entries.
    merge_stores(str(_config(dataset, "merged.sqlite")), [str(dataset / "machine_a.sqlite")])
    assert "0 entries added" in capsys.readouterr().out


def test_merge_refuses_a_missing_store_naming_it(dataset):
    with pytest.raises(FileNotFoundError, match="nowhere.sqlite is not a feature store"):
        merge_stores(str(_config(dataset, "merged.sqlite")), [str(dataset / "nowhere.sqlite")])
