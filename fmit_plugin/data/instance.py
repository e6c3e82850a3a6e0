"""One tweet (plus optional image and visual objects), the unit every reader produces."""
from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class VisualObjects:
    """
    Visual objects of one tweet, ready for the flat lattice.

    features : `torch.Tensor`  # (objects, visual_dim)
    spans : `torch.Tensor`  # (objects, 2): inclusive 0-based (first word, last word) each object belongs to
    labels : what each object is (the phrase, "whole image", "person"...), for display only.
    boxes : each object's box in image pixels (left, top, right, bottom), `None` for grid cells; for display.
    """

    features: torch.Tensor
    spans: torch.Tensor
    labels: list[str] = field(default_factory=list)
    boxes: list[Optional[tuple[float, float, float, float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.features.dim() != 2 or self.spans.shape != (self.features.shape[0], 2):
            raise ValueError(
                f"VisualObjects needs features (objects, dim) and spans (objects, 2); got "
                f"{tuple(self.features.shape)} and {tuple(self.spans.shape)}"
            )


@dataclass
class TaggingInstance:
    """
    A tokenized tweet with optional gold tags, image and visual objects.

    `metadata["source"]` says where it came from ("file:line"), so errors can name it.
    """

    words: list[str]
    tags: Optional[list[str]] = None
    image_id: Optional[str] = None
    image_path: Optional[str] = None
    visual: Optional[VisualObjects] = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tags is not None and len(self.tags) != len(self.words):
            raise ValueError(
                f"{len(self.words)} words but {len(self.tags)} tags"
                + (f" at {self.metadata['source']}" if "source" in self.metadata else "")
            )

    def __len__(self) -> int:
        return len(self.words)
