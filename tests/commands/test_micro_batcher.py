"""The micro-batcher: concurrent submissions share batches, results go back to their own caller (as
soon as their piece of the batch is done), the model runs on one thread only, and a failing batch
fails its callers without stopping the batcher."""
import asyncio
import threading
import time

import pytest

from fmit_plugin.commands.micro_batcher import MicroBatcher


class Recorder:
    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, items: list[int]):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        self.batches.append(list(items))
        with self.lock:
            self.running -= 1
        if -1 in items:
            raise RuntimeError("bad item")
        yield range(len(items)), [item * 10 for item in items]


def test_concurrent_submissions_are_batched_and_answered_in_place():
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_s=0.01)

    async def main():
        return await asyncio.gather(*[batcher.submit([i, i + 100]) for i in range(20)])

    results = asyncio.run(main())
    batcher.close()
    assert results == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert len(recorder.batches) < 20
    # A batch holds whole submissions and stops growing at max_batch_size (one submission may overshoot).
    assert all(len(batch) % 2 == 0 and len(batch) <= 8 for batch in recorder.batches)
    assert len(recorder.threads) == 1 and recorder.most_at_once == 1
    assert batcher.items_run == 40 and batcher.largest_batch == max(len(b) for b in recorder.batches)


def test_a_lone_request_does_not_wait_for_company_longer_than_max_wait():
    recorder = Recorder(delay=0.0)
    batcher = MicroBatcher(recorder, max_batch_size=32, max_wait_s=0.005)

    async def main():
        started = time.perf_counter()
        result = await batcher.submit([3])
        return result, time.perf_counter() - started

    result, seconds = asyncio.run(main())
    batcher.close()
    assert result == [30] and seconds < 0.5


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on():
    recorder = Recorder(delay=0.0)
    batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_s=0.0)

    async def main():
        with pytest.raises(RuntimeError, match="bad item"):
            await batcher.submit([-1])
        return await batcher.submit([2])

    assert asyncio.run(main()) == [20]
    batcher.close()


def whole(items):
    yield range(len(items)), items


@pytest.mark.parametrize("pieces, message", [
    (lambda items: [([0, 1], items[:1])], "1 results for 2 positions"),
    (lambda items: [([0], items[:1])], "answered 1 of 2 items"),
    (lambda items: [([0], items[:1]), ([0], items[:1])], "twice or out of range"),
    (lambda items: [([0, 2], items)], "twice or out of range"),
])
def test_wrong_results_are_an_error_not_a_hang(pieces, message):
    batcher = MicroBatcher(pieces, max_batch_size=4, max_wait_s=0.0)

    async def main():
        await batcher.submit([1, 2])

    with pytest.raises(RuntimeError, match=message):
        asyncio.run(main())
    batcher.close()


def test_a_request_is_answered_when_its_piece_is_done_not_when_the_batch_is():
    finished = threading.Event()

    def two_pieces(items):
        yield [0], [items[0] * 10]
        assert finished.wait(5), "the first request was not answered while the batch ran"
        yield range(1, len(items)), [item * 10 for item in items[1:]]

    batcher = MicroBatcher(two_pieces, max_batch_size=4, max_wait_s=0.05)

    async def main():
        async def first():
            result = await batcher.submit([1])
            # Counted before the answer: /health never lags behind an answer a client holds.
            assert (batcher.batches_run, batcher.items_run) == (1, 1)
            finished.set()  # only possible before the second piece: the model thread waits for it
            return result

        return await asyncio.gather(first(), batcher.submit([2, 3]))

    assert asyncio.run(main()) == [[10], [20, 30]]
    assert batcher.batches_run == 1 and batcher.items_run == 3
    batcher.close()


def test_empty_submission_and_bad_size():
    batcher = MicroBatcher(whole)
    assert asyncio.run(batcher.submit([])) == []
    batcher.close()
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(whole, max_batch_size=0)
