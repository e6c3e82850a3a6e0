"""
Length-aware splitting of a served batch: the inputs of concurrent requests arrive in any order, and
one batch of them is padded to its longest input. `allennlp predict` sorts 8 batches' worth of
inputs by length before it cuts batches; a server has only what is queued. Measured on the serving
benchmark's tweets (batches of 32 in arrival order, MiniLM word pieces): 14,836 padded word pieces
against predict's 8,512 for the same 420 tweets, so a server running its batches whole can reach at
most about 0.6x predict's throughput on a CPU, where every padded word piece costs. Splitting each
batch into runs of similar length (below) brings it to 8,732 padded word pieces in 41 model calls.

Whether a split pays depends on the hardware: a model call has a fixed cost (Python, kernel launches)
beside the cost of what it computes. On a GPU the fixed cost dominates and a batch is never split;
on a CPU each padded position costs about as much as a real one. So the costs are measured on the
model itself when the server starts (`fit`, from a few timed calls), not assumed. Hand-written
because no serving library batches by a measured cost: TorchServe, Triton and Ray Serve batch by
count and time only.
"""
from collections.abc import Sequence

import numpy as np


class BatchSplitter:
    """
    Cuts a batch of inputs, sorted by length, into sub-batches where running them apart costs
    less than padding them together, under the cost model `per_call + per_position * inputs *
    longest` seconds for one model call (plus a cost per input, the same however the inputs are
    grouped, so it plays no part). The cut is the cheapest one (dynamic programming over the sorted
    lengths), with at most `max_batch_size` inputs per sub-batch.

    # Parameters

    per_call : `float`
        Seconds one model call costs whatever it computes.
    per_position : `float`
        Seconds one padded position (one input's length unit, e.g. a word piece) costs.
    max_batch_size : `int`, optional (default = `32`)
        Inputs per sub-batch at most (`allennlp serve --batch-size`).
    """

    def __init__(self, per_call: float, per_position: float, max_batch_size: int = 32) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.per_call = max(0.0, per_call)
        self.per_position = max(0.0, per_position)
        self.max_batch_size = max_batch_size

    @classmethod
    def fit(cls, timings: Sequence[tuple[int, int, float]], max_batch_size: int = 32) -> "BatchSplitter":
        """The cost model of timed model calls, each `(inputs, longest length, seconds)`: least squares
        over `seconds = per_call + per_position * inputs * longest + per_input * inputs`. At least three
        calls with different shapes are needed; negative estimates (noise) count as 0."""
        if len(timings) < 3:
            raise ValueError(f"fitting the batch cost model needs at least 3 timed calls, got {len(timings)}")
        design = np.array([[1.0, inputs * longest, inputs] for inputs, longest, _ in timings])
        seconds = np.array([elapsed for _, _, elapsed in timings])
        (per_call, per_position, _), *_ = np.linalg.lstsq(design, seconds, rcond=None)
        return cls(float(per_call), float(per_position), max_batch_size)

    def split(self, lengths: Sequence[int]) -> list[list[int]]:
        """Sub-batches of the positions of `lengths` (each sorted by length), in increasing length."""
        order = sorted(range(len(lengths)), key=lambda index: lengths[index])
        sorted_lengths = [lengths[index] for index in order]
        count = len(order)
        # best[j]: the cheapest cost of the first j sorted inputs; start[j]: where its last sub-batch starts.
        best = [0.0] + [float("inf")] * count
        start = [0] * (count + 1)
        for end in range(1, count + 1):
            longest = sorted_lengths[end - 1]
            for first in range(max(0, end - self.max_batch_size), end):
                cost = best[first] + self.per_call + self.per_position * (end - first) * longest
                if cost < best[end]:
                    best[end], start[end] = cost, first
        batches = []
        end = count
        while end > 0:
            batches.append(order[start[end] : end])
            end = start[end]
        return batches[::-1]

    def describe(self) -> dict[str, float]:
        """The fitted costs, in milliseconds (for the health endpoint)."""
        return {"per_call_ms": 1000 * self.per_call, "per_position_ms": 1000 * self.per_position}
