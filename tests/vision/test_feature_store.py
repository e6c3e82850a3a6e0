import multiprocessing
import os
import signal
import sqlite3
import time

import pytest
import torch

from fmit_plugin.vision.feature_store import FeatureStore, StoredObjects
from fmit_plugin.vision.regions import Region


def _objects(seed: int, count: int = 3, dim: int = 5) -> StoredObjects:
    generator = torch.Generator().manual_seed(seed)
    regions = [Region("whole image", (0.0, 0.0, 10.0, 20.0))] + [
        Region(f"phrase {i}", (1.0, 2.0, 3.0, 4.0), span=(i, i + 1), score=0.5) for i in range(count - 2)
    ] + [Region("grid 0,1", None, grid_cell=(0, 1, 7))]
    return StoredObjects(regions, torch.randn(count, dim, generator=generator))


def test_round_trip_and_misses(tmp_path):
    store = FeatureStore(tmp_path / "store.sqlite")
    assert store.get("absent") is None
    store.put_many({"a": _objects(1), "b": _objects(2, count=4)})
    got = store.get("b")
    assert got is not None and got.regions == _objects(2, count=4).regions
    assert torch.equal(got.features, _objects(2, count=4).features)
    assert len(store) == 2
    # A second store on the same file (another process, a later run) sees the same entries.
    again = FeatureStore(tmp_path / "store.sqlite")
    assert torch.equal(again.get("a").features, _objects(1).features)


def _writer(path: str) -> None:
    store = FeatureStore(path)
    for batch in range(100_000):
        store.put_many({f"k{batch}-{i}": _objects(batch * 10 + i, count=4, dim=256) for i in range(10)})


def _check_entry(store: FeatureStore, key: str) -> None:
    batch, index = (int(part) for part in key[1:].split("-"))
    got = store.get(key)
    assert got is not None and torch.equal(got.features, _objects(batch * 10 + index, count=4, dim=256).features)


def test_concurrent_readers_and_a_killed_writer_see_only_complete_entries(tmp_path):
    path = str(tmp_path / "store.sqlite")
    FeatureStore(path)
    process = multiprocessing.get_context("spawn").Process(target=_writer, args=(path,))
    process.start()
    reader = FeatureStore(path)
    deadline, reads_while_writing = time.time() + 60, 0
    while time.time() < deadline:
        time.sleep(0.2)
        # Read while the writer writes: whole transactions only, and every entry complete.
        keys = [row[0] for row in sqlite3.connect(path, timeout=30).execute("SELECT key FROM objects")]
        assert len(keys) % 10 == 0
        for key in keys[-10:]:
            _check_entry(reader, key)
        reads_while_writing += min(10, len(keys)) if process.is_alive() else 0
        if len(keys) >= 50:
            break
    assert reads_while_writing >= 10
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    store = FeatureStore(path)
    keys = [row[0] for row in sqlite3.connect(path).execute("SELECT key FROM objects")]
    assert len(keys) >= 50 and len(keys) % 10 == 0  # whole transactions only
    for key in keys:
        _check_entry(store, key)
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_store_pickles_without_its_connection(tmp_path):
    import pickle

    store = FeatureStore(tmp_path / "store.sqlite")
    store.put_many({"a": _objects(1)})
    copy = pickle.loads(pickle.dumps(store))
    assert torch.equal(copy.get("a").features, _objects(1).features)



def test_a_read_only_store_reads_the_file_and_keeps_new_entries_in_memory(tmp_path):
    path = tmp_path / "store.sqlite"
    FeatureStore(path).put_many({"a": _objects(1)})
    before = path.read_bytes()
    store = FeatureStore(path, read_only=True)
    assert torch.equal(store.get("a").features, _objects(1).features)
    store.put_many({"b": _objects(2)})
    assert torch.equal(store.get("b").features, _objects(2).features) and len(store) == 2
    assert path.read_bytes() == before and FeatureStore(path).get("b") is None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # the file cannot be written through it
        store._connection().execute("DELETE FROM objects")


def test_a_read_only_store_without_a_file_creates_none(tmp_path):
    store = FeatureStore(tmp_path / "absent" / "store.sqlite", read_only=True)
    assert store.get("a") is None and len(store) == 0
    store.put_many({"a": _objects(1)})
    assert store.get("a") is not None
    assert not (tmp_path / "absent").exists()


def test_merge_from_adds_only_the_missing_entries_and_leaves_the_source_untouched(tmp_path):
    mine, theirs = FeatureStore(tmp_path / "mine.sqlite"), FeatureStore(tmp_path / "theirs.sqlite")
    mine.put_many({"a": _objects(1), "b": _objects(2)})
    theirs.put_many({"b": _objects(99), "c": _objects(3, count=4)})
    theirs.close()
    before = (tmp_path / "theirs.sqlite").read_bytes()
    assert mine.merge_from(tmp_path / "theirs.sqlite") == 1
    assert len(mine) == 3
    assert torch.equal(mine.get("c").features, _objects(3, count=4).features)
    # An entry both hold is the same entry (keys name all it depends on): this store's is kept.
    assert torch.equal(mine.get("b").features, _objects(2).features)
    assert (tmp_path / "theirs.sqlite").read_bytes() == before
    assert mine.merge_from(tmp_path / "theirs.sqlite") == 0


def test_merge_from_refuses_a_missing_store_and_a_read_only_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.sqlite"):
        FeatureStore(tmp_path / "mine.sqlite").merge_from(tmp_path / "absent.sqlite")
    with pytest.raises(ValueError, match="read-only"):
        FeatureStore(tmp_path / "mine.sqlite", read_only=True).merge_from(tmp_path / "absent.sqlite")
