"""The visual objects of one tweet, as the flat lattice takes them: what extraction returns."""
from dataclasses import dataclass, field
from typing import Optional

import torch

from fmit_plugin.vision.feature_store import StoredObjects


@dataclass
class VisualObjects:
    """
    Visual objects of one tweet, ready for the flat lattice.

    features : `torch.Tensor`
        `(objects, visual_dim)`: one feature vector per object.
    spans : `torch.Tensor`
        `(objects, 2)`: the inclusive 0-based (first word, last word) each object belongs to.
    labels : what each object is (the phrase, "whole image", "person"...), for display only.
    boxes : each object's box in image pixels (left, top, right, bottom), `None` for grid cells; for display.
    image_status : `"ok"`, or why the uniform empty image stood in for the tweet's image (a
        `LoadedImage.status`: "missing", "corrupt", ...).
    image_message : what was wrong with the image, naming its path; empty when it was read.
    ungrounded : the image was read and its extractor grounds regions, but none was found (no
        region given, none in a sidecar, none by the detector): the model saw the whole image only.
    """

    features: torch.Tensor
    spans: torch.Tensor
    labels: list[str] = field(default_factory=list)
    boxes: list[Optional[tuple[float, float, float, float]]] = field(default_factory=list)
    image_status: str = "ok"
    image_message: str = ""
    ungrounded: bool = False

    def __post_init__(self) -> None:
        if self.features.dim() != 2 or self.spans.shape != (self.features.shape[0], 2):
            raise ValueError(
                f"VisualObjects needs features (objects, dim) and spans (objects, 2); got "
                f"{tuple(self.features.shape)} and {tuple(self.spans.shape)}"
            )


def to_visual_objects(
    stored: StoredObjects, num_words: int, image_status: str = "ok", image_message: str = ""
) -> VisualObjects:
    """Spans of `None` (whole sentence) become (0, n - 1); spans past the tweet are clipped."""
    last = max(0, num_words - 1)
    spans = [
        (0, last) if region.span is None else (min(region.span[0], last), min(region.span[1], last))
        for region in stored.regions
    ]
    return VisualObjects(
        features=stored.features,
        spans=torch.tensor(spans, dtype=torch.long).view(-1, 2),
        labels=[region.label for region in stored.regions],
        boxes=[region.box for region in stored.regions],
        image_status=image_status,
        image_message=image_message,
    )
