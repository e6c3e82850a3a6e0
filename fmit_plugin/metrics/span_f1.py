"""Span-level (entity-level) precision / recall / F1 for BIO-tagged sequences.

Spans are decoded as conlleval and seqeval's default mode decode them (`data.span_utils`); a strict
mode, in which only `B-` can open an entity, is tracked alongside it.
"""

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from fmit_plugin.common import distributed
from fmit_plugin.data.span_utils import LabelTensors, bio_positions, bio_tags_to_spans, label_tensors


def span_count_table(
    predicted: torch.Tensor,
    gold: torch.Tensor,
    mask: torch.Tensor,
    prefixes: torch.Tensor,
    kinds: torch.Tensor,
    num_types: int,
) -> torch.Tensor:
    """
    Span counts of a batch of label ids on their device, with no read back to the host:
    `predicted`, `gold`, `mask` `(batch, time)` (left-aligned), `prefixes` / `kinds` `(labels,)`
    from `label_tensors`; returns `(2, 3, types)`: [default, strict] x [true positives, predicted
    spans, gold spans] per type, the same spans as `bio_tags_to_spans` finds. A predicted span is a
    true positive when a gold span has the same start, end and type.
    """
    p = bio_positions(predicted, mask, prefixes, kinds)
    g = bio_positions(gold, mask, prefixes, kinds)
    time = predicted.shape[1]
    position = torch.arange(time, device=predicted.device).expand_as(predicted)

    def span_end(last: torch.Tensor) -> torch.Tensor:
        # The first entity end at or after each word: a reversed running minimum.
        return torch.where(last, position, time).flip(1).cummin(dim=1).values.flip(1)

    p_starts, p_kind, p_by_b = p.starts, p.kind, p.opened_by_b
    g_starts, g_kind, g_by_b = g.starts, g.kind, g.opened_by_b
    match = p_starts & g_starts & (p_kind == g_kind) & (span_end(p.last) == span_end(g.last))
    # (batch, time, types)
    p_types = torch.nn.functional.one_hot(p_kind.clamp(min=0), num_types)
    g_types = torch.nn.functional.one_hot(g_kind.clamp(min=0), num_types)

    def per_type(flags: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return (types * flags.unsqueeze(-1)).sum(dim=(0, 1))  # (types,)

    return torch.stack([
        torch.stack([per_type(match, p_types), per_type(p_starts, p_types), per_type(g_starts, g_types)]),
        torch.stack([per_type(match & p_by_b & g_by_b, p_types), per_type(p_by_b, p_types), per_type(g_by_b, g_types)]),
    ])


@dataclass
class SpanCounts:
    """True positive, false positive and false negative span counts for one entity type."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    def __add__(self, other: "SpanCounts") -> "SpanCounts":
        return SpanCounts(
            self.true_positives + other.true_positives,
            self.false_positives + other.false_positives,
            self.false_negatives + other.false_negatives,
        )

    def precision_recall_f1(self) -> Tuple[float, float, float]:
        """Zero denominators give 0.0 (seqeval's `zero_division=0`)."""
        predicted = self.true_positives + self.false_positives
        gold = self.true_positives + self.false_negatives
        precision = self.true_positives / predicted if predicted else 0.0
        recall = self.true_positives / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1


class SpanF1Measure:
    """
    AllenNLP-style metric: call it on batches of predicted and gold BIO tag sequences, read it with
    `get_metric`. Scores are micro-averaged from counts summed over every batch (and, under
    `torch.distributed`, over every worker), never averaged from per-batch scores.

    Taggers call `add_ids` with label id tensors instead: the counting then stays on the tensors'
    device and nothing is read back until `get_metric`, so a training or validation step does not
    wait for the accelerator to update the metric.

    `get_metric` returns `precision-overall`, `recall-overall`, `f1-measure-overall`, the same three
    per entity type (e.g. `f1-measure-PER`) for every type seen in gold or predicted tags, and
    `precision-strict-overall`, `recall-strict-overall`, `f1-measure-strict-overall` computed from
    spans decoded in strict mode (see `bio_tags_to_spans`).
    """

    def __init__(self) -> None:
        self._counts: Dict[str, SpanCounts] = defaultdict(SpanCounts)
        self._strict_counts: Dict[str, SpanCounts] = defaultdict(SpanCounts)
        # Counts from `add_ids` not yet read: `(2, 3, types)` on the tensors' device, and its types.
        self._pending: Optional[torch.Tensor] = None
        self._pending_types: Tuple[str, ...] = ()
        # Per label set and device: the prefix and type tables (built once, not copied every batch).
        self._tables: Dict[Tuple[Tuple[Tuple[int, str], ...], torch.device], LabelTensors] = {}

    def add_ids(
        self, predicted: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor, labels: Mapping[int, str]
    ) -> None:
        """
        Counts a batch given as label ids: `predicted`, `gold`, `mask` `(batch, time)`, `labels` the
        id -> BIO label mapping. The same counts as calling the metric with the labels' strings.
        """
        if predicted.shape != gold.shape or predicted.shape != mask.shape:
            raise ValueError(
                f"predicted {tuple(predicted.shape)}, gold {tuple(gold.shape)} and mask {tuple(mask.shape)} "
                "must have the same shape"
            )
        key = (tuple(sorted(labels.items())), predicted.device)
        if key not in self._tables:
            self._tables[key] = label_tensors(labels, predicted.device)
        prefixes, kinds, types = self._tables[key]
        if not types:  # labels without an entity type (only "O"): no span to count
            return
        if types != self._pending_types:
            self._read_pending()
            self._pending_types = types
        table = span_count_table(predicted.detach(), gold.detach(), mask, prefixes, kinds, len(types))
        self._pending = table if self._pending is None else self._pending + table

    def _read_pending(self) -> None:
        """Moves the `add_ids` counts into the per-type counts: one read from their device."""
        if self._pending is None:
            return
        (tp, predicted, gold), (strict_tp, strict_predicted, strict_gold) = self._pending.tolist()
        for index, span_type in enumerate(self._pending_types):
            for counts, true, found, expected in (
                (self._counts, tp, predicted, gold), (self._strict_counts, strict_tp, strict_predicted, strict_gold)
            ):
                if found[index] or expected[index]:
                    counts[span_type] += SpanCounts(
                        true[index], found[index] - true[index], expected[index] - true[index]
                    )
        self._pending = None

    def __call__(self, predicted_tags: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]]) -> None:
        if len(predicted_tags) != len(gold_tags):
            raise ValueError(f"Got {len(predicted_tags)} predicted sequences but {len(gold_tags)} gold ones")
        for index, (predicted, gold) in enumerate(zip(predicted_tags, gold_tags, strict=True)):
            if len(predicted) != len(gold):
                raise ValueError(
                    f"Sentence {index}: predicted tags have length {len(predicted)} "
                    f"but gold tags have length {len(gold)}"
                )
            for strict, counts in ((False, self._counts), (True, self._strict_counts)):
                predicted_spans = set(bio_tags_to_spans(predicted, strict=strict))
                gold_spans = set(bio_tags_to_spans(gold, strict=strict))
                for span_type, _, _ in predicted_spans & gold_spans:
                    counts[span_type].true_positives += 1
                for span_type, _, _ in predicted_spans - gold_spans:
                    counts[span_type].false_positives += 1
                for span_type, _, _ in gold_spans - predicted_spans:
                    counts[span_type].false_negatives += 1

    def get_metric(self, reset: bool = False) -> Dict[str, float]:
        """
        Under `torch.distributed` this is a collective call: every worker must call it, and each gets
        the scores over all workers' data (except inside `distributed.this_worker_only()`).
        """
        self._read_pending()
        counts, strict_counts = self._gathered_counts()
        metrics: Dict[str, float] = {}
        for span_type in sorted(counts):
            self._add_scores(metrics, counts[span_type], span_type)
        self._add_scores(metrics, sum(counts.values(), SpanCounts()), "overall")
        self._add_scores(metrics, sum(strict_counts.values(), SpanCounts()), "strict-overall")
        if reset:
            self.reset()
        return metrics

    def reset(self) -> None:
        self._counts.clear()
        self._strict_counts.clear()
        self._pending = None

    @staticmethod
    def _add_scores(metrics: Dict[str, float], counts: SpanCounts, suffix: str) -> None:
        precision, recall, f1 = counts.precision_recall_f1()
        metrics[f"precision-{suffix}"] = precision
        metrics[f"recall-{suffix}"] = recall
        metrics[f"f1-measure-{suffix}"] = f1

    def _gathered_counts(self) -> Tuple[Dict[str, SpanCounts], Dict[str, SpanCounts]]:
        """This worker's counts, or under `torch.distributed` the counts summed over all workers."""
        if not distributed.gathers_metrics():  # alone, or a progress bar asking for this worker's counts
            return dict(self._counts), dict(self._strict_counts)
        # Strict spans are a subset of default spans, so the default types cover the strict ones.
        local_types = sorted(self._counts)
        # Workers may have seen different types: agree on the sorted union first, so that row i of
        # every worker's count tensor means the same type when the tensors are summed.
        gathered: List[Optional[List[str]]] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local_types)
        all_types = sorted({t for worker_types in gathered for t in worker_types or []})
        # NCCL can only reduce CUDA tensors; gloo and mpi take CPU tensors.
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        local_rows = [
            [
                value
                for c in (self._counts.get(t, SpanCounts()), self._strict_counts.get(t, SpanCounts()))
                for value in (c.true_positives, c.false_positives, c.false_negatives)
            ]
            for t in all_types
        ]
        table = torch.tensor(local_rows, dtype=torch.long, device=device).reshape(len(all_types), 6)
        dist.all_reduce(table, op=dist.ReduceOp.SUM)
        rows = table.tolist()
        return (
            {t: SpanCounts(*row[:3]) for t, row in zip(all_types, rows, strict=True)},
            {t: SpanCounts(*row[3:]) for t, row in zip(all_types, rows, strict=True)},
        )
