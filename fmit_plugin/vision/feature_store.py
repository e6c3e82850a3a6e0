"""
On-disk cache of visual objects: SQLite (Python's standard library), one row per (tweet, image,
settings) key holding the regions as JSON and their features as one float32 blob.

Why SQLite: every write is a transaction, so a crash mid-write leaves no partial entry; WAL mode
lets any number of readers (data loader workers, DDP ranks) read while one process writes; it is
one file, needs no extra dependency, and looks keys up without loading the whole store.
"""
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy
import torch

from fmit_plugin.vision.regions import Region


@dataclass
class StoredObjects:
    """The visual objects of one tweet: regions (with their spans) and features `(objects, dim)`."""

    regions: list[Region]
    features: torch.Tensor


def _region_to_json(region: Region) -> dict:
    return {"label": region.label, "box": region.box, "span": region.span, "score": region.score,
            "grid_cell": region.grid_cell}


def _region_from_json(data: dict) -> Region:
    return Region(
        label=data["label"],
        box=tuple(data["box"]) if data["box"] is not None else None,  # type: ignore[arg-type]
        span=tuple(data["span"]) if data["span"] is not None else None,  # type: ignore[arg-type]
        score=data["score"],
        grid_cell=tuple(data["grid_cell"]) if data["grid_cell"] is not None else None,  # type: ignore[arg-type]
    )


class FeatureStore:
    """
    A key -> `StoredObjects` map in one SQLite file. Keys are built by the caller from everything
    the objects depend on (image content hash, words, grounder, backbone and extractor settings),
    so a changed setting is a miss, never a stale hit.
    """

    def __init__(self, path: Union[str, Path], read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        # Read-only (evaluate / predict from an archive): the file is opened with SQLite's `mode=ro`
        # when it exists (never created), and new entries stay in this process's memory.
        self._memory: dict[str, StoredObjects] = {}
        self._table_seen = False
        # One connection per thread: sqlite3 connections must not cross threads.
        self._local = threading.local()
        if read_only:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, regions TEXT NOT NULL, "
                "dim INTEGER NOT NULL, features BLOB NOT NULL)"
            )

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            if self.read_only:
                connection = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=60.0)
            else:
                connection = sqlite3.connect(self.path, timeout=60.0)
                connection.execute("PRAGMA journal_mode=WAL")
            self._local.connection = connection
        return connection

    def _has_file(self) -> bool:
        """Whether there is a table to read (a read-only store's file may not exist, or be empty)."""
        if not self.read_only or self._table_seen:
            return True
        if not self.path.is_file():
            return False
        try:
            self._table_seen = self._connection().execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'objects'"
            ).fetchone() is not None
        except sqlite3.DatabaseError:
            return False
        return self._table_seen

    def get(self, key: str) -> Optional[StoredObjects]:
        if key in self._memory:
            return self._memory[key]
        if not self._has_file():
            return None
        row = self._connection().execute(
            "SELECT regions, dim, features FROM objects WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        regions_json, dim, blob = row
        regions = [_region_from_json(item) for item in json.loads(regions_json)]
        features = torch.from_numpy(numpy.frombuffer(blob, dtype=numpy.float32).copy()).view(-1, dim)
        return StoredObjects(regions, features)

    def put_many(self, items: dict[str, StoredObjects]) -> None:
        """Writes all items in one transaction: either every entry lands or none does."""
        if self.read_only:
            self._memory.update(items)
            return
        rows = [
            (
                key,
                json.dumps([_region_to_json(region) for region in value.regions]),
                int(value.features.shape[1]),
                value.features.detach().to(torch.float32).contiguous().numpy().tobytes(),
            )
            for key, value in items.items()
        ]
        with self._connection() as connection:  # commits, or rolls back on error
            connection.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)", rows)

    def merge_from(self, other: Union[str, Path]) -> int:
        """Adds the entries of the store file `other` (read-only) that this one lacks; returns how
        many. Keys name everything an entry depends on, so an entry both hold is the same entry."""
        if self.read_only:
            raise ValueError(f"Cannot merge into the read-only feature store {self.path}")
        source = FeatureStore(other, read_only=True)
        if not Path(other).is_file() or not source._has_file():
            raise FileNotFoundError(f"{other} is not a feature store (no SQLite file with an objects table)")
        added = 0
        try:
            rows = source._connection().execute("SELECT key, regions, dim, features FROM objects")
            while chunk := rows.fetchmany(256):
                with self._connection() as connection:  # one transaction per chunk: a crash keeps whole entries
                    before = connection.total_changes
                    connection.executemany("INSERT OR IGNORE INTO objects VALUES (?, ?, ?, ?)", chunk)
                    added += connection.total_changes - before
        finally:
            source.close()
        return added

    def __len__(self) -> int:
        if not self._has_file():
            return len(self._memory)
        return int(self._connection().execute("SELECT COUNT(*) FROM objects").fetchone()[0]) + len(self._memory)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def __getstate__(self) -> dict:
        # Connections cannot be pickled (DataLoader workers, DDP spawn): reconnect lazily there.
        return {"path": self.path, "read_only": self.read_only, "memory": self._memory}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self.read_only = state.get("read_only", False)
        self._memory = state.get("memory", {})
        self._table_seen = False
        self._local = threading.local()
