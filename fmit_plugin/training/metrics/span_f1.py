"""Span-level (entity-level) precision / recall / F1 for BIO-tagged sequences.

The default decoding reproduces conlleval and seqeval's default mode exactly; a strict mode, in which
only `B-` can open an entity, is tracked alongside it.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from fmit_plugin.training import distributed

Span = Tuple[str, int, int]


def _split_tag(tag: str) -> Tuple[str, Optional[str]]:
    """`"B-PER"` -> `("B", "PER")`, `"O"` -> `("O", None)`; anything else is an error, not a guess."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[0] in "BI" and tag[1] == "-":
        return tag[0], tag[2:]
    raise ValueError(f"Tag {tag!r} is neither 'O' nor of the form 'B-<type>' / 'I-<type>'")


def bio_tags_to_spans(tags: Sequence[str], strict: bool = False) -> List[Span]:
    """
    Decodes BIO tags into `(type, start, end)` spans, `start` inclusive and `end` exclusive.

    Written by hand rather than calling seqeval: seqeval is only a test dependency, and its API works
    on whole corpora rather than on one sentence's spans.

    Default mode (conlleval / seqeval default): `B-X` always opens an entity; `I-X` continues an open
    entity of type X and otherwise (after `O` or another type) opens a new entity of type X; an entity
    ends on `O`, on `B-`, or when the type changes.

    Strict mode: only `B-X` opens an entity; an `I-X` that does not continue an entity of type X is
    dropped, so it and the `I-X` tags following it belong to no entity.
    """
    spans: List[Span] = []
    open_type: Optional[str] = None
    open_start = 0
    for index, tag in enumerate(tags):
        prefix, tag_type = _split_tag(tag)
        if prefix == "I" and tag_type == open_type:
            continue
        if open_type is not None:
            spans.append((open_type, open_start, index))
            open_type = None
        if prefix == "B" or (prefix == "I" and not strict):
            open_type, open_start = tag_type, index
    if open_type is not None:
        spans.append((open_type, open_start, len(tags)))
    return spans


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

    `get_metric` returns `precision-overall`, `recall-overall`, `f1-measure-overall`, the same three
    per entity type (e.g. `f1-measure-PER`) for every type seen in gold or predicted tags, and
    `precision-strict-overall`, `recall-strict-overall`, `f1-measure-strict-overall` computed from
    spans decoded in strict mode (see `bio_tags_to_spans`).
    """

    def __init__(self) -> None:
        self._counts: Dict[str, SpanCounts] = defaultdict(SpanCounts)
        self._strict_counts: Dict[str, SpanCounts] = defaultdict(SpanCounts)

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
