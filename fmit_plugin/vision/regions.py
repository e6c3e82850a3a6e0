"""Plain records passed between the visual pipeline's stages."""
from dataclasses import dataclass
from typing import Optional

# Box in pixels of the (EXIF-rotated) image: (left, top, right, bottom), right/bottom exclusive.
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Phrase:
    """A phrase of the tweet: its text and the inclusive 0-based indices of its first and last word."""

    text: str
    first_word: int
    last_word: int


@dataclass(frozen=True)
class Region:
    """
    A region of the image that becomes one visual object.

    label : what it shows ("whole image", the phrase, "person", "grid 3,4"...), for display.
    box : where, in pixels; `None` for a grid cell pooled from the backbone's feature map.
    span : inclusive (first word, last word) the object belongs to in the lattice; `None` means
        the whole sentence (whole image, general words, grid cells).
    score : the grounder's confidence, 1.0 when not applicable.
    grid_cell : (row, column, k) for the "grid" grounder's cells, else `None`.
    """

    label: str
    box: Optional[Box]
    span: Optional[tuple[int, int]] = None
    score: float = 1.0
    grid_cell: Optional[tuple[int, int, int]] = None

# Grounded MNER (Yu et al., ACL 2023): a box shows an entity when its IoU with a gold box is at least this.
GROUNDING_IOU_THRESHOLD = 0.5


def box_iou(first: Box, second: Box) -> float:
    """Intersection over union of two boxes; 0.0 when they do not overlap (or either has no area).
    By hand: torchvision has `ops.box_iou`, but it is not a dependency (and must not pull a torch build)."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
    return intersection / (union - intersection)
