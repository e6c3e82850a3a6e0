"""
Class-agnostic candidate boxes (grounded MNER): regions tied to no phrase, each a visual object of the whole
sentence, among which the model's `entity_grounding` block must find the one that shows each entity.

GMNER methods choose among a detector's candidate boxes (VinVL in Yu et al., ACL 2023). Two sources: a JSON-lines
file of boxes per image (`proposals`), and a zero-shot detector asked generic queries (`detector_proposals`).
"""
import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from tango.common.exceptions import ConfigurationError

from fmit_plugin.vision.grounders import (
    TOKEN_LEVEL_MODEL_TYPES,
    PhraseGrounder,
    ZeroShotDetectorGrounder,
    clip_box,
    parse_box,
    parse_image_line,
)
from fmit_plugin.vision.regions import Box, Phrase, Region, box_iou

PROPOSAL_LABEL = "proposal"
GENERIC_QUERIES = ("object", "person", "animal", "vehicle", "building", "logo", "text", "food")


@PhraseGrounder.register("proposals")
class ProposalsGrounder(PhraseGrounder):
    """
    Reads class-agnostic candidate boxes from a JSON-lines file, one line per image::

        {"image_id": "123", "boxes": [[x0, y0, x1, y1], ...], "scores": [0.9, ...]}

    `scores` is optional (all 1.0). Each box becomes a region labelled "proposal" with `span=None`: a visual object
    of the whole sentence, tied to no phrase. The whole file is read and validated at construction (a
    `ConfigurationError` naming file, line and problem); at `ground` time boxes are clipped to the image, and a box
    with nothing left inside is dropped and counted (`dropped_outside_image`). An image id absent from the file gets
    no proposals (then only the whole image, which the extractor always adds).

    # Parameters

    path : `str`
        The JSON-lines file.
    max_proposals : `int`, optional (default = `10`)
        Keep the best this many per image (by score; file order breaks ties).
    min_score : `float`, optional (default = `0.0`)
        Leave out boxes scoring below this.

    Registered as a `PhraseGrounder` with name "proposals".
    """

    def __init__(self, path: str, max_proposals: int = 10, min_score: float = 0.0) -> None:
        if max_proposals < 1:
            raise ConfigurationError(f"proposals: max_proposals must be at least 1, got {max_proposals}")
        self.path = os.path.abspath(path)
        self.max_proposals = max_proposals
        self.min_score = min_score
        try:
            content = Path(self.path).read_bytes()
        except OSError as error:
            raise ConfigurationError(f"Proposals file '{path}' cannot be read: {error}") from error
        self.content_hash = hashlib.sha256(content).hexdigest()
        self.boxes: dict[str, list[tuple[Box, float]]] = {}
        first_lines: dict[str, int] = {}
        for line_number, line in enumerate(content.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                image_id, boxes = self._parse_line(line)
                if image_id in first_lines:
                    raise ValueError(f"image_id '{image_id}' already appeared on line {first_lines[image_id]}")
            except ValueError as error:
                raise ConfigurationError(f"{self.path}, line {line_number}: {error}") from error
            first_lines[image_id] = line_number
            kept = [(box, score) for box, score in boxes if score >= min_score]
            # sorted is stable: equal scores keep the file's order.
            self.boxes[image_id] = sorted(kept, key=lambda item: -item[1])[:max_proposals]
        self.dropped_outside_image = 0

    @staticmethod
    def _parse_line(line: str) -> tuple[str, list[tuple[Box, float]]]:
        image_id, record = parse_image_line(line, "boxes", "a list of [x0, y0, x1, y1]")
        boxes = [parse_box(value) for value in record["boxes"]]
        scores = record.get("scores", [1.0] * len(boxes))
        if not isinstance(scores, list) or len(scores) != len(boxes) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores
        ):
            raise ValueError(f"'scores' must be a list of {len(boxes)} numbers, one per box")
        return image_id, [(box, float(score)) for box, score in zip(boxes, scores, strict=True)]

    def cache_key(self) -> str:
        return (f"proposals(path={self.path}, sha256={self.content_hash}, max_proposals={self.max_proposals}, "
                f"min_score={self.min_score})")

    def ground(self, image: Image.Image, image_id: str, words: list[str], phrases: list[Phrase]) -> list[Region]:
        width, height = image.size
        regions = []
        for raw_box, score in self.boxes.get(str(image_id), []):
            box = clip_box(raw_box, width, height)
            if box is None:
                self.dropped_outside_image += 1
                continue
            regions.append(Region(PROPOSAL_LABEL, box, None, score))
        return regions


def non_maximum_suppression(boxes: Sequence[Box], scores: Sequence[float], iou_threshold: float) -> list[int]:
    """Indices of the boxes greedy NMS keeps, best score first. By hand: torchvision (`ops.nms`) is no dependency."""
    kept: list[int] = []
    for index in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if all(box_iou(boxes[index], boxes[other]) < iou_threshold for other in kept):
            kept.append(index)
    return kept


@PhraseGrounder.register("detector_proposals")
class DetectorProposalsGrounder(ZeroShotDetectorGrounder):
    """
    Candidate boxes from a zero-shot detector (OWL-ViT, OWLv2, Grounding DINO) asked generic queries ("object",
    "person", ...) instead of the tweet's phrases: each box scores its best query; boxes above `threshold` are
    thinned by non-maximum suppression and the best `max_proposals` become regions labelled "proposal", with
    `span=None` (the whole sentence), as the `proposals` file source gives them.

    # Parameters

    model_name : `str`, optional (default = `"google/owlv2-base-patch16-ensemble"`)
        The zero-shot detector (`AutoModelForZeroShotObjectDetection`), a hub name or a local folder.
    threshold : `float`, optional (default = `0.1`)
        A box's best query score must be above this.
    queries : `list[str]`, optional (default = `GENERIC_QUERIES`)
        The class-agnostic text queries the detector is asked ("object", "person", "vehicle"...).
    max_proposals : `int`, optional (default = `10`)
        Keep the best this many candidates per image, after non-maximum suppression.
    nms_iou : `float`, optional (default = `0.5`)
        A box overlapping a better kept box with at least this IoU is dropped.
    load_weights : `bool`, optional (default = `True`)
        As for `zero_shot_detector`.

    Registered as a `PhraseGrounder` with name "detector_proposals".
    """

    def __init__(
        self,
        model_name: str = "google/owlv2-base-patch16-ensemble",
        threshold: float = 0.1,
        queries: Optional[list[str]] = None,
        max_proposals: int = 10,
        nms_iou: float = 0.5,
        load_weights: bool = True,
    ) -> None:
        if max_proposals < 1:
            raise ConfigurationError(f"detector_proposals: max_proposals must be at least 1, got {max_proposals}")
        self.queries = list(queries) if queries is not None else list(GENERIC_QUERIES)
        if not self.queries or not all(isinstance(q, str) and q.strip() for q in self.queries):
            raise ConfigurationError(f"detector_proposals: queries must be non-empty strings, got {queries!r}")
        self.max_proposals = max_proposals
        self.nms_iou = nms_iou
        super().__init__(model_name=model_name, threshold=threshold, general_words=False, load_weights=load_weights)

    def cache_key(self) -> str:
        return (f"detector_proposals({super().cache_key()}, queries={self.queries}, "
                f"max_proposals={self.max_proposals}, nms_iou={self.nms_iou})")

    def ground(self, image: Image.Image, image_id: str, words: list[str], phrases: list[Phrase]) -> list[Region]:
        image = image.convert("RGB")
        width, height = image.size
        with torch.no_grad():
            if self.model_type in TOKEN_LEVEL_MODEL_TYPES:
                boxes, scores = self._score_token_level(image, self.queries)
            else:
                boxes, scores = self._score_query_level(image, self.queries)
        best = scores.max(dim=-1).values.tolist()  # (boxes,): each box's best query
        candidates: list[tuple[Box, float]] = []
        for raw_box, score in zip(boxes.tolist(), best, strict=True):
            box = clip_box(raw_box, width, height)
            if box is not None and score > self.threshold:
                candidates.append((box, score))
        kept = non_maximum_suppression([b for b, _ in candidates], [s for _, s in candidates], self.nms_iou)
        return [Region(PROPOSAL_LABEL, candidates[i][0], None, candidates[i][1]) for i in kept[: self.max_proposals]]
