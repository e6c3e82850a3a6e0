"""One tweet (plus optional image and visual objects), the unit every reader produces."""
from dataclasses import dataclass, field
from typing import Any, Optional

from fmit_plugin.vision.regions import Box, Region
from fmit_plugin.vision.visual_objects import VisualObjects


@dataclass
class TaggingInstance:
    """
    A tokenized tweet with optional gold tags, image and visual objects.

    `metadata["source"]` says where it came from ("file:line"), so errors can name it. `warnings`
    says what went wrong without stopping the tweet (an unreadable image the uniform empty image
    replaced...); the predictor returns them with the tweet's answer.

    `image_bytes` is an image held in memory (an upload), used instead of `image_path`; `regions`
    are groundings given with the tweet, used instead of the grounder's (`None`: not given).
    `entity_boxes` (grounded MNER, the `twitter_gmner` reader): for every gold entity, keyed by its
    (start, end exclusive) word span, the boxes that show it in the image, in image pixels; an empty
    list means the entity is not groundable. `None` when the data has no grounding annotation.
    """

    words: list[str]
    tags: Optional[list[str]] = None
    image_id: Optional[str] = None
    image_path: Optional[str] = None
    visual: Optional[VisualObjects] = None
    image_bytes: Optional[bytes] = None
    regions: Optional[list[Region]] = None
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    entity_boxes: Optional[dict[tuple[int, int], list[Box]]] = None

    def __post_init__(self) -> None:
        if self.tags is not None and len(self.tags) != len(self.words):
            raise ValueError(
                f"{len(self.words)} words but {len(self.tags)} tags"
                + (f" at {self.metadata['source']}" if "source" in self.metadata else "")
            )

    def __len__(self) -> int:
        return len(self.words)
