"""Grounded MNER scores (Yu et al., ACL 2023): an entity counts when its span, its type and its box are right."""
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Optional

import torch
import torch.distributed as dist

from fmit_plugin.common import distributed
from fmit_plugin.metrics.span_f1 import SpanCounts
from fmit_plugin.vision.regions import GROUNDING_IOU_THRESHOLD, Box, box_iou

# (type, start, end exclusive, box or None): a predicted entity and where the model says it is.
PredictedEntity = tuple[str, int, int, Optional[Box]]
# (type, start, end exclusive, boxes): a gold entity and every box that shows it; none = not groundable.
GoldEntity = tuple[str, int, int, Sequence[Box]]


def box_matches(predicted: Optional[Box], gold: Sequence[Box], threshold: float = GROUNDING_IOU_THRESHOLD) -> bool:
    """The grounding is right: the predicted box overlaps one of the gold boxes with IoU >= `threshold`,
    or the entity is not groundable and the prediction says so (`None`)."""
    if predicted is None or not gold:
        return predicted is None and not gold
    return any(box_iou(predicted, box) >= threshold for box in gold)


@dataclass
class GmnerCounts:
    """Counts over every sentence seen: predicted and gold entities, entities whose span and type match
    (`entity_matches`), and of those the ones whose box matches too (`grounded_matches`)."""

    predicted: int = 0
    gold: int = 0
    entity_matches: int = 0
    grounded_matches: int = 0


class GmnerF1Measure:
    """
    AllenNLP-style metric for grounded MNER: call it on batches of predicted and gold grounded
    entities, read it with `get_metric`. A predicted (span, type, box) is a true positive when a gold
    entity has the same span and type and either the predicted box has IoU >= 0.5 with one of the
    gold entity's boxes, or both are "none" (the entity is not groundable and the model says so).

    `get_metric` returns `gmner-precision`, `gmner-recall`, `gmner-f1`; the same without the box,
    `entity-precision`, `entity-recall`, `entity-f1` (span F1); and `grounding-accuracy`, the share of
    correctly found entities (span and type) that are also grounded right. Micro-averaged from counts;
    under `torch.distributed` the counts are summed over every worker first (a collective call, as
    `SpanF1Measure.get_metric`).
    """

    def __init__(self) -> None:
        self._counts = GmnerCounts()

    def __call__(self, predicted: Sequence[Sequence[PredictedEntity]], gold: Sequence[Sequence[GoldEntity]]) -> None:
        if len(predicted) != len(gold):
            raise ValueError(f"Got {len(predicted)} predicted sentences but {len(gold)} gold ones")
        counts = self._counts
        for predicted_entities, gold_entities in zip(predicted, gold, strict=True):
            gold_boxes = {(kind, start, end): boxes for kind, start, end, boxes in gold_entities}
            counts.gold += len(gold_boxes)
            for kind, start, end, box in set(predicted_entities):
                counts.predicted += 1
                if (kind, start, end) in gold_boxes:
                    counts.entity_matches += 1
                    counts.grounded_matches += box_matches(box, gold_boxes[kind, start, end])

    def get_metric(self, reset: bool = False) -> dict[str, float]:
        counts = self._gathered_counts()
        metrics: dict[str, float] = {}
        for name, true_positives in (("gmner", counts.grounded_matches), ("entity", counts.entity_matches)):
            span_counts = SpanCounts(true_positives, counts.predicted - true_positives, counts.gold - true_positives)
            precision, recall, f1 = span_counts.precision_recall_f1()
            metrics.update({f"{name}-precision": precision, f"{name}-recall": recall, f"{name}-f1": f1})
        metrics["grounding-accuracy"] = (
            counts.grounded_matches / counts.entity_matches if counts.entity_matches else 0.0
        )
        if reset:
            self.reset()
        return metrics

    def reset(self) -> None:
        self._counts = GmnerCounts()

    def _gathered_counts(self) -> GmnerCounts:
        """This worker's counts, or under `torch.distributed` the counts summed over all workers."""
        if not distributed.gathers_metrics():
            return GmnerCounts(*astuple(self._counts))
        # NCCL can only reduce CUDA tensors; gloo and mpi take CPU tensors.
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        table = torch.tensor(astuple(self._counts), dtype=torch.long, device=device)
        dist.all_reduce(table, op=dist.ReduceOp.SUM)
        return GmnerCounts(*table.tolist())
