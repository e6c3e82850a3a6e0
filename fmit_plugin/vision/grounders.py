"""
Phrase grounders: which regions of a tweet's image become FMIT's visual objects (paper section 3.1).

The paper grounds each noun phrase of the tweet with a visual grounding toolkit, and also grounds the general words
"miscellaneous", "person", "location" and "organization" to find more objects. A grounder returns those regions;
the caller always adds the whole image itself.
"""
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image
from tango.common import Registrable
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.config_files import DEFAULT_MAX_BYTES, decode_utf8, read_regular_file
from fmit_plugin.common.model_paths import loading_hint, resolve_model_path
from fmit_plugin.vision.regions import Box, Phrase, Region

logger = logging.getLogger(__name__)

GENERAL_WORDS = ("miscellaneous", "person", "location", "organization")


class PhraseGrounder(Registrable):
    """
    Finds the image regions that the tweet's phrases, and the general words, refer to.

    Phrase regions carry `span=(first_word, last_word)` of their phrase; general-word regions carry `span=None`
    (they belong to the whole sentence) and the general word as their label. The whole-image object is never
    returned: the caller always adds it.
    """

    def ground(self, image: Image.Image, image_id: str, words: list[str], phrases: list[Phrase]) -> list[Region]:
        raise NotImplementedError

    def cache_key(self) -> str:
        """Identifies this grounder and every setting that changes its regions, for the feature cache."""
        raise NotImplementedError


def clip_box(box: Sequence[float], width: int, height: int) -> Optional[Box]:
    """`box` clipped to a `width` x `height` image; `None` when nothing of it is left inside."""
    left = min(max(float(box[0]), 0.0), float(width))
    top = min(max(float(box[1]), 0.0), float(height))
    right = min(max(float(box[2]), 0.0), float(width))
    bottom = min(max(float(box[3]), 0.0), float(height))
    # A zero-area crop would break the feature extractor downstream.
    if right <= left or bottom <= top:
        return None
    return (left, top, right, bottom)


def span_in_tweet(span: tuple[int, int], num_words: int) -> bool:
    return 0 <= span[0] <= span[1] < num_words


def _directory_fingerprint(path: str) -> str:
    """Names, sizes and mtimes of a local model folder's files: a retrained model in the same folder gets a new key."""
    directory = Path(path)
    if not directory.is_dir():
        return ""
    digest = hashlib.sha256()
    for file in sorted(directory.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Zero-shot detectors (OWL-ViT, OWLv2, Grounding DINO)
# ---------------------------------------------------------------------------------------------------------------

# OWL-ViT / OWLv2 score every box against every query (logits: boxes x queries).
QUERY_LEVEL_MODEL_TYPES = ("owlvit", "owlv2")
# Grounding DINO reads one period-separated prompt and scores every box against every prompt token.
TOKEN_LEVEL_MODEL_TYPES = ("grounding-dino", "mm-grounding-dino")


def grounding_prompt(queries: Sequence[str]) -> tuple[str, list[Optional[tuple[int, int]]]]:
    """
    Grounding DINO's prompt for `queries` ("george zimmerman. person."), and the character span
    (start, end exclusive) of each query inside it; `None` for a query left empty after cleaning.

    Queries are lower-cased (the released models are trained on lower-cased prompts) and their own periods
    become spaces, since a period separates queries.
    """
    parts: list[str] = []
    spans: list[Optional[tuple[int, int]]] = []
    position = 0
    for query in queries:
        text = " ".join(query.lower().replace(".", " ").split())
        if not text:
            spans.append(None)
            continue
        if parts:
            position += 1  # the space after the previous query's period
        spans.append((position, position + len(text)))
        parts.append(text + ".")
        position += len(text) + 1
    return " ".join(parts), spans


def query_token_positions(
    offsets: Sequence[tuple[int, int]], char_spans: Sequence[Optional[tuple[int, int]]], num_positions: int
) -> list[list[int]]:
    """
    For each query's character span, the prompt tokens that overlap it, given the tokenizer's offset mapping.
    Special tokens (empty offsets) and tokens past `num_positions` (the model's `max_text_len`) are left out,
    so a query truncated away gets no tokens.
    """
    positions: list[list[int]] = []
    for char_span in char_spans:
        if char_span is None:
            positions.append([])
            continue
        positions.append([
            index
            for index, (start, end) in enumerate(offsets)
            if end > start and start < char_span[1] and end > char_span[0] and index < num_positions
        ])
    return positions


def token_scores_to_query_scores(token_probabilities: torch.Tensor, positions: Sequence[list[int]]) -> torch.Tensor:
    """
    (boxes, text positions) probabilities -> (boxes, queries): a box's score for a query is its best score over
    the query's tokens (the processor scores a box by its best token too). Queries without tokens score 0.
    """
    columns = [
        token_probabilities[:, tokens].max(dim=-1).values if tokens else token_probabilities.new_zeros(
            token_probabilities.shape[0]
        )
        for tokens in positions
    ]
    return torch.stack(columns, dim=-1)


def best_box_per_query(scores: torch.Tensor, threshold: float) -> list[Optional[tuple[int, float]]]:
    """For each query (column of `scores`, boxes x queries), its best box and score if above `threshold`."""
    if scores.shape[0] == 0:
        return [None] * scores.shape[1]
    best_scores, best_boxes = scores.max(dim=0)
    return [
        (int(box), float(score)) if float(score) > threshold else None
        for box, score in zip(best_boxes.tolist(), best_scores.tolist())
    ]


@PhraseGrounder.register("zero_shot_detector")
class ZeroShotDetectorGrounder(PhraseGrounder):
    """
    Grounds phrases and general words with a transformers zero-shot object detector, loaded by
    `AutoModelForZeroShotObjectDetection` and `AutoProcessor`: OWL-ViT, OWLv2 and Grounding DINO (and MM Grounding
    DINO) work by hub name or local folder.

    One forward pass per image scores every candidate box against all queries (the phrases' texts, then the
    general words); each query keeps its best box if that box scores above `threshold`, else it yields no region.
    Boxes come from the processor's own post-processing (which knows, e.g., that OWLv2 pads images to a square)
    and are clipped to the image.

    The model stays on the CPU unless moved with `to(device)`; inputs follow the model's device.

    # Parameters

    model_name : `str`, optional (default = `"google/owlv2-base-patch16-ensemble"`)
        Hub name, local folder or `pkg:` path of the detector.
    threshold : `float`, optional (default = `0.1`)
        A query's best box must score above this (sigmoid score) to become a region.
    general_words : `bool`, optional (default = `True`)
        Also ground "miscellaneous", "person", "location" and "organization" (regions for the whole sentence).
    load_weights : `bool`, optional (default = `True`)
        When `False`, the architecture is built from the config with random weights (tests, dry runs).

    Registered as a `PhraseGrounder` with name "zero_shot_detector".
    """

    def __init__(
        self,
        model_name: str = "google/owlv2-base-patch16-ensemble",
        threshold: float = 0.1,
        general_words: bool = True,
        load_weights: bool = True,
    ) -> None:
        # Imported here so that the other grounders do not pay for importing transformers' detection code.
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

        self.model_name = model_name
        self.threshold = threshold
        self.general_words = general_words
        self.load_weights = load_weights
        path = resolve_model_path(model_name)
        self._fingerprint = _directory_fingerprint(path)
        try:
            config = AutoConfig.from_pretrained(path)
            self.model_type: str = config.model_type
            if self.model_type not in QUERY_LEVEL_MODEL_TYPES + TOKEN_LEVEL_MODEL_TYPES:
                raise ConfigurationError(
                    f"Zero-shot detector '{model_name}' is a '{self.model_type}' model; supported model types are "
                    f"{', '.join(QUERY_LEVEL_MODEL_TYPES + TOKEN_LEVEL_MODEL_TYPES)}"
                )
            self.processor = AutoProcessor.from_pretrained(path)
            if load_weights:
                self.model = AutoModelForZeroShotObjectDetection.from_pretrained(path)
            else:
                self.model = AutoModelForZeroShotObjectDetection.from_config(config)
        except OSError as error:
            raise ConfigurationError(
                f"{loading_hint(model_name)} The 'precomputed' grounder reads groundings from a JSON-lines file and "
                f"works offline. ({error})"
            ) from error
        self.model.eval()

    def to(self, device: torch.device | str) -> "ZeroShotDetectorGrounder":
        self.model.to(device)
        return self

    def cache_key(self) -> str:
        weights = "pretrained" if self.load_weights else "random"
        return (
            f"zero_shot_detector(model={self.model_name}, fingerprint={self._fingerprint}, weights={weights}, "
            f"threshold={self.threshold}, general_words={self.general_words})"
        )

    def ground(self, image: Image.Image, image_id: str, words: list[str], phrases: list[Phrase]) -> list[Region]:
        # A phrase outside the tweet cannot be placed in the lattice.
        kept = [phrase for phrase in phrases if span_in_tweet((phrase.first_word, phrase.last_word), len(words))]
        queries = [phrase.text for phrase in kept] + (list(GENERAL_WORDS) if self.general_words else [])
        if not queries:
            return []
        image = image.convert("RGB")
        width, height = image.size
        with torch.no_grad():
            if self.model_type in TOKEN_LEVEL_MODEL_TYPES:
                boxes, scores = self._score_token_level(image, queries)
            else:
                boxes, scores = self._score_query_level(image, queries)
        clipped = [clip_box(box, width, height) for box in boxes.tolist()]
        # A box with no area inside the image cannot be cropped: the query falls back to its next best box.
        usable = torch.tensor([box is not None for box in clipped], dtype=torch.bool)
        scores = scores.masked_fill(~usable[:, None], float("-inf"))
        regions = []
        for index, best in enumerate(best_box_per_query(scores, self.threshold)):
            if best is None:
                continue
            box = clipped[best[0]]
            assert box is not None
            if index < len(kept):
                phrase = kept[index]
                regions.append(Region(phrase.text, box, (phrase.first_word, phrase.last_word), best[1]))
            else:
                regions.append(Region(queries[index], box, None, best[1]))
        return regions

    def _boxes(self, outputs: Any, image: Image.Image, **kwargs: Any) -> torch.Tensor:
        """All predicted boxes in image pixels, in the model's order (threshold -1 keeps every box)."""
        results = self.processor.post_process_grounded_object_detection(
            outputs, threshold=-1.0, target_sizes=[(image.height, image.width)], **kwargs
        )
        boxes = results[0]["boxes"].float().cpu()
        if boxes.shape[0] != outputs.logits.shape[1]:
            raise RuntimeError(f"Post-processing of '{self.model_name}' dropped boxes; cannot match them to scores")
        return boxes

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _score_query_level(self, image: Image.Image, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        # OWL's text encoder has a short context (16 tokens): long phrases are truncated, not rejected.
        inputs = self.processor(text=[queries], images=image, return_tensors="pt", truncation=True)
        outputs = self.model(**inputs.to(self._device()))
        boxes = self._boxes(outputs, image, text_labels=[queries])
        scores = torch.sigmoid(outputs.logits[0].float().cpu())  # (boxes, queries)
        return boxes, scores

    def _score_token_level(self, image: Image.Image, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompt, char_spans = grounding_prompt(queries)
        inputs = self.processor(text=prompt, images=image, return_tensors="pt", truncation=True)
        encoding = self.processor.tokenizer(prompt, return_offsets_mapping=True, truncation=True)
        if list(encoding["input_ids"]) != inputs["input_ids"][0].tolist():
            raise RuntimeError(f"Tokenizer of '{self.model_name}' tokenised the prompt differently from its processor")
        outputs = self.model(**inputs.to(self._device()))
        boxes = self._boxes(outputs, image, input_ids=inputs["input_ids"], text_threshold=1.0)
        # Logits are padded with -inf up to max_text_len; sigmoid turns those into 0.
        token_probabilities = torch.sigmoid(outputs.logits[0].float().cpu())  # (boxes, max_text_len)
        positions = query_token_positions(encoding["offset_mapping"], char_spans, token_probabilities.shape[-1])
        return boxes, token_scores_to_query_scores(token_probabilities, positions)


# ---------------------------------------------------------------------------------------------------------------
# Precomputed groundings
# ---------------------------------------------------------------------------------------------------------------


# Shown with every format error: other tools also name their files groundings.jsonl, in other formats.
LINE_FORMAT = '{"image_id": ..., "regions": [{"phrase", "span", "box", "score"}]}'


class _DuplicateImageError(ValueError):
    """The line is well formed; only its image id was already used."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_image_line(line: str, items: str, described: str) -> tuple[str, dict[str, Any]]:
    """A JSON-lines record of one image (a sidecar's, a proposals file's): its `image_id` as a string
    and the record, whose `items` key must hold a list (`described` says of what, for the message);
    `ValueError` saying what is wrong."""
    record = json.loads(line)  # json.JSONDecodeError is a ValueError
    if not isinstance(record, dict):
        raise ValueError("a line must be a JSON object")
    for key in ("image_id", items):
        if key not in record:
            raise ValueError(f"no '{key}'")
    image_id = record["image_id"]
    if not isinstance(image_id, (str, int)) or isinstance(image_id, bool):
        raise ValueError(f"'image_id' must be a string or an integer, got {image_id!r}")
    if not isinstance(record[items], list):
        raise ValueError(f"'{items}' must be {described}")
    return str(image_id), record


def parse_box(box: Any) -> Box:
    """`[x0, y0, x1, y1]` as 4 finite numbers with x0 < x1 and y0 < y1 (a sidecar region's, a proposal's);
    `ValueError` saying what is wrong."""
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(value) for value in box):
        raise ValueError(f"'box' must be 4 numbers [x0, y0, x1, y1], got {box!r}")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"'box' {box!r} has x1 <= x0 or y1 <= y0")
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def parse_region(region: Any) -> tuple[str, Box, Optional[tuple[int, int]], float]:
    """One region record (a sidecar line's, or one given with a prediction input); `ValueError` saying what
    is wrong: (phrase, box, span or `None`, score)."""
    if not isinstance(region, dict):
        raise ValueError("a region must be a JSON object")
    for key in ("phrase", "span", "box"):
        if key not in region:
            raise ValueError(f"a region has no '{key}'")
    phrase = region["phrase"]
    if not isinstance(phrase, str):
        raise ValueError("'phrase' must be a string")
    box = parse_box(region["box"])
    span = region["span"]
    if span is not None:
        if not isinstance(span, list) or len(span) != 2 or not all(_is_int(value) for value in span):
            raise ValueError(f"'span' must be null or 2 integers [first, last], got {span!r}")
        if not 0 <= span[0] <= span[1]:
            raise ValueError(f"'span' {span!r} must have 0 <= first <= last")
    score = region.get("score", 1.0)
    if not _is_number(score):
        raise ValueError(f"'score' must be a number, got {score!r}")
    return (
        phrase,
        box,
        None if span is None else (span[0], span[1]),
        float(score),
    )


@PhraseGrounder.register("precomputed")
class PrecomputedGrounder(PhraseGrounder):
    """
    Reads groundings computed elsewhere from a JSON-lines sidecar, one line per image, the format other MNER
    projects ship their groundings in:

        {"image_id": "123", "regions": [{"phrase": "George Zimmerman", "span": [3, 4], "box": [x0, y0, x1, y1],
                                         "score": 0.9}, {"phrase": "person", "span": null, "box": [...]}]}

    `span` is the inclusive (first word, last word) of the phrase in the tweet, or null for a general word (the
    whole sentence); `score` is optional (1.0). The whole file is read and validated once, at construction.

    At `ground` time the `phrases` argument is ignored: the sidecar already says which phrase is where. Regions
    whose span lies outside the tweet are dropped and counted in `dropped_out_of_range`; boxes are clipped to the
    image, and a box left with no area is dropped and counted in `dropped_outside_image`; an image id absent from
    the sidecar gives no regions. This grounder needs no model, so it works offline.

    # Parameters

    path : `str`
        The JSON-lines file.
    min_score : `float`, optional (default = `0.0`)
        Regions scoring below this are left out.
    max_bytes : `int`, optional (default = `2**30`)
        A larger sidecar is refused before it is read (only regular files are read at all).

    Registered as a `PhraseGrounder` with name "precomputed".
    """

    def __init__(self, path: str, min_score: float = 0.0, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = os.path.abspath(path)
        self.min_score = min_score
        content = read_regular_file(self.path, "groundings sidecar", max_bytes)
        text = decode_utf8(content, self.path, "groundings sidecar")
        # The content hash, not the mtime, goes into the cache key: the features depend on what was read.
        self.content_hash = hashlib.sha256(content).hexdigest()
        self.regions: dict[str, list[tuple[str, Box, Optional[tuple[int, int]], float]]] = {}
        first_lines: dict[str, int] = {}
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                image_id, regions = self._parse_line(line)
                if image_id in first_lines:
                    raise _DuplicateImageError(
                        f"image_id '{image_id}' already appeared on line {first_lines[image_id]}"
                    )
            except _DuplicateImageError as error:
                raise ConfigurationError(f"{self.path}, line {line_number}: {error}") from error
            except ValueError as error:
                raise ConfigurationError(
                    f"{self.path}, line {line_number}: {error}; the 'precomputed' grounder expects one JSON object "
                    f"per line, {LINE_FORMAT} (the form other MNER projects ship; 'score' is optional)"
                ) from error
            first_lines[image_id] = line_number
            self.regions[image_id] = [region for region in regions if region[3] >= min_score]
        self.dropped_out_of_range = 0
        self.dropped_outside_image = 0
        self._warned = False

    @staticmethod
    def _parse_line(line: str) -> tuple[str, list[tuple[str, Box, Optional[tuple[int, int]], float]]]:
        image_id, record = parse_image_line(line, "regions", "a list")
        return image_id, [parse_region(region) for region in record["regions"]]

    def cache_key(self) -> str:
        return f"precomputed(path={self.path}, sha256={self.content_hash}, min_score={self.min_score})"

    def ground(self, image: Image.Image, image_id: str, words: list[str], phrases: list[Phrase]) -> list[Region]:
        width, height = image.size
        result = []
        for phrase, raw_box, span, score in self.regions.get(str(image_id), []):
            if span is not None and not span_in_tweet(span, len(words)):
                self.dropped_out_of_range += 1
                self._warn_once(f"a region of image '{image_id}' spans words {span} of a {len(words)}-word tweet")
                continue
            box = clip_box(raw_box, width, height)
            if box is None:
                self.dropped_outside_image += 1
                self._warn_once(f"a region of image '{image_id}' lies outside the {width}x{height} image")
                continue
            result.append(Region(phrase, box, span, score))
        return result

    def _warn_once(self, what: str) -> None:
        # One message, not one per tweet: the counters say how many were dropped in all.
        if not self._warned:
            self._warned = True
            logger.warning(
                "%s: %s; such regions are dropped (counted in dropped_out_of_range / dropped_outside_image, "
                "logged only once)", self.path, what
            )


# ---------------------------------------------------------------------------------------------------------------
# No grounding: the whole image only, or a fixed grid
# ---------------------------------------------------------------------------------------------------------------


@PhraseGrounder.register("whole_image")
class WholeImageGrounder(PhraseGrounder):
    """
    Grounds nothing: the only visual object is the whole image, which the caller adds.

    Registered as a `PhraseGrounder` with name "whole_image".
    """

    def cache_key(self) -> str:
        return "whole_image"

    def ground(self, image: Image.Image, image_id: str, words: list[str], phrases: list[Phrase]) -> list[Region]:
        return []


@PhraseGrounder.register("grid")
class GridGrounder(PhraseGrounder):
    """
    The paper's "w/o Obj" ablation: instead of grounded objects, `k` x `k` average-segmented blocks of the image
    (7 x 7 in the paper). The regions are returned row by row with `grid_cell=(row, col, k)` and `span=None`; their
    boxes are the cells of an even split of the image, for display only: the feature extractor sees `grid_cell` on
    a region and average-pools the backbone's last feature map into that cell rather than cropping the box.

    # Parameters

    k : `int`, optional (default = `7`)
        Cells per side.

    Registered as a `PhraseGrounder` with name "grid".
    """

    def __init__(self, k: int = 7) -> None:
        if k < 1:
            raise ConfigurationError(f"grid grounder: k must be at least 1, got {k}")
        self.k = k

    def cache_key(self) -> str:
        return f"grid(k={self.k})"

    def ground(self, image: Image.Image, image_id: str, words: list[str], phrases: list[Phrase]) -> list[Region]:
        width, height = image.size
        k = self.k
        return [
            Region(
                f"grid {row},{col}",
                (col * width / k, row * height / k, (col + 1) * width / k, (row + 1) * height / k),
                None,
                1.0,
                (row, col, k),
            )
            for row in range(k)
            for col in range(k)
        ]
