"""Tests for common/distributed.py's helpers that need no process group: shares, rounds, worker names
(named apart from tests/training/test_distributed.py: test modules share one namespace)."""
import pytest

from fmit_plugin.common import distributed


def as_worker(monkeypatch, rank: int, world_size: int) -> None:
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world_size)


def test_alone_a_worker_has_everything_in_rounds_of_one():
    assert list(distributed.share(5)) == [0, 1, 2, 3, 4]
    assert list(distributed.rounds("abc")) == [["a"], ["b"], ["c"]]
    assert distributed.gather_to_primary(7) == [7] and distributed.broadcast_from_primary(7) == 7


@pytest.mark.parametrize("count", [0, 1, 6, 7])
def test_shares_of_three_workers_cover_every_item_once_and_differ_by_one_at_most(monkeypatch, count):
    shares = []
    for rank in range(3):
        as_worker(monkeypatch, rank, 3)
        shares.append(list(distributed.share(count)))
    assert sorted(i for share in shares for i in share) == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_rounds_put_item_k_of_each_round_on_rank_k_and_keep_the_last_short_round(monkeypatch):
    as_worker(monkeypatch, 0, 3)
    rounds = list(distributed.rounds(iter(range(7))))  # any iterable, read lazily
    assert rounds == [[0, 1, 2], [3, 4, 5], [6]]
    # Gathered in rank order, round after round: the input order.
    assert [item for round_ in rounds for item in round_] == list(range(7))


def test_describe_worker_reads_torchruns_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.describe_worker() == "worker rank 3 of 4"
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.describe_worker() == "worker rank 0 of 1"
