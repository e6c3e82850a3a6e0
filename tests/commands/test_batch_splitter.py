"""The batch splitter: the cheapest cut of a batch under its cost model (checked against every cut),
whole batches where a model call's fixed cost dominates, and the cost model fitted from timings."""
import itertools

import pytest

from fmit_plugin.commands.batch_splitter import BatchSplitter


def cost(splitter, lengths, batches):
    return sum(splitter.per_call + splitter.per_position * len(b) * max(lengths[i] for i in b) for b in batches)


def every_cut(lengths, max_size):
    """Every cut of the sorted lengths into consecutive runs of at most max_size (the brute force)."""
    count = len(lengths)
    for mask in itertools.product([False, True], repeat=count - 1):
        bounds = [0] + [k + 1 for k, cut in enumerate(mask) if cut] + [count]
        runs = [(a, b) for a, b in zip(bounds, bounds[1:])]
        if all(b - a <= max_size for a, b in runs):
            yield runs


@pytest.mark.parametrize("per_call", [0.0, 3.0, 20.0])
def test_the_cut_is_the_cheapest_and_covers_every_input_once(per_call):
    lengths = [9, 3, 14, 3, 30, 8, 8, 15, 2, 40]
    splitter = BatchSplitter(per_call=per_call, per_position=1.0, max_batch_size=4)
    batches = splitter.split(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 4 for b in batches)
    ordered = sorted(lengths)
    cheapest = min(sum(per_call + (b - a) * ordered[b - 1] for a, b in runs) for runs in every_cut(ordered, 4))
    assert cost(splitter, lengths, batches) == pytest.approx(cheapest)


def test_a_dominant_call_cost_keeps_batches_whole_and_padding_cost_splits_them():
    lengths = [5, 50, 5, 50, 5, 50]
    assert [len(b) for b in BatchSplitter(per_call=1.0, per_position=0.0, max_batch_size=32).split(lengths)] == [6]
    split = BatchSplitter(per_call=10.0, per_position=1.0, max_batch_size=32).split(lengths)
    assert [sorted(lengths[i] for i in b) for b in split] == [[5, 5, 5], [50, 50, 50]]
    assert BatchSplitter(per_call=1.0, per_position=0.0).split([]) == []


def test_the_cost_model_is_fitted_from_timed_calls():
    def seconds(inputs, longest):
        return 0.07 + 0.0015 * inputs * longest + 0.002 * inputs

    shapes = [(1, 6), (1, 34), (8, 6), (8, 34)]
    splitter = BatchSplitter.fit([(n, n_len, seconds(n, n_len)) for n, n_len in shapes], max_batch_size=16)
    assert splitter.per_call == pytest.approx(0.07) and splitter.per_position == pytest.approx(0.0015)
    assert splitter.max_batch_size == 16
    assert splitter.describe() == pytest.approx({"per_call_ms": 70.0, "per_position_ms": 1.5})
    with pytest.raises(ValueError, match="at least 3 timed calls"):
        BatchSplitter.fit([(1, 6, 0.1)])
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchSplitter(1.0, 1.0, max_batch_size=0)
