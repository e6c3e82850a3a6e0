"""From (tweet, image) to the visual objects FMIT puts in its lattice, through the on-disk store."""
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import torch
from PIL import Image
from tango.common import FromParams
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.progress import progress
from fmit_plugin.vision.backbones import ImageBackbone
from fmit_plugin.vision.feature_store import FeatureStore, StoredObjects
from fmit_plugin.vision.grounders import GridGrounder, PhraseGrounder, WholeImageGrounder, clip_box, span_in_tweet
from fmit_plugin.vision.image_loading import (
    MAX_IMAGE_BYTES,
    ImageLoadReport,
    LoadedImage,
    load_image,
    load_image_bytes,
)
from fmit_plugin.vision.noun_phrases import NounPhraseExtractor
from fmit_plugin.vision.regions import Region
from fmit_plugin.vision.visual_objects import VisualObjects, to_visual_objects

logger = logging.getLogger(__name__)

WHOLE_IMAGE = "whole image"
# Bumped whenever the way objects are built changes, so old store entries become misses.
EXTRACTION_VERSION = "1"


class TweetWithImage(Protocol):
    """What extraction reads of a tweet: its words and its image (a `TaggingInstance` is one).

    A tweet may also carry `image_bytes` (an image in memory, used instead of `image_path`) and
    `regions` (a list of `Region`s given with the tweet, used instead of the grounder's); both
    are read with `getattr`, so plain tweets need neither."""

    @property
    def words(self) -> Sequence[str]: ...

    @property
    def image_path(self) -> Optional[str]: ...

    @property
    def image_id(self) -> Optional[str]: ...


@dataclass
class ExtractionSummary:
    """What one extraction pass did, for the single summary line users see."""

    tweets: int = 0
    cache_hits: int = 0
    regions: int = 0
    seconds: float = 0.0
    images: ImageLoadReport = field(default_factory=ImageLoadReport)
    # Read images for which a grounding extractor found no region: the model saw the whole image only.
    ungrounded: int = 0

    def update(self, other: "ExtractionSummary") -> None:
        """Adds another worker's pass, which ran at the same time as this one."""
        self.tweets += other.tweets
        self.cache_hits += other.cache_hits
        self.regions += other.regions
        self.seconds = max(self.seconds, other.seconds)
        self.images.update(other.images)
        self.ungrounded += other.ungrounded

    def line(self) -> str:
        ungrounded = f", {self.ungrounded} images without regions" if self.ungrounded else ""
        return (
            f"visual objects: {self.tweets} tweets ({self.cache_hits} from the store), {self.regions} regions"
            f"{ungrounded}; {self.images.summary()}; {self.seconds:.1f} s"
        )


class VisualObjectExtractor(FromParams):
    """
    For each tweet: the whole image, one region per grounded noun phrase and per general word
    (from the `grounder`), each encoded by the `backbone` to one vector; objects carry the word
    span they belong to (the whole sentence for the whole image, general words and grid cells).
    A missing or unreadable image becomes the paper's uniform empty image (whole image only),
    counted in the summary. Results are cached in a `FeatureStore` keyed by the image's content
    hash, the words and every setting, so a second pass reads the store only.

    # Parameters

    backbone : `ImageBackbone`
        E.g. {"type": "efficientnet_lite"} (offline) or {"type": "transformers"} (ResNet-152).
    grounder : `PhraseGrounder`, optional (default = "whole_image": the whole image only)
        Decides which regions besides the whole image become objects ("precomputed", "grid", ...).
    noun_phrases : `NounPhraseExtractor`, optional (default = `None`)
        Needed by grounders that look phrases up in the image ("zero_shot_detector").
    store_path : `str`, optional (default = `None`: no cache)
        SQLite file of the feature store.
    store_read_only : `bool`, optional (default = `False`)
        Open `store_path` read-only (only when it exists) and keep new features in memory: what
        `evaluate` / `predict` do with an archive's store unless given `--feature-store`.
    max_objects : `int`, optional (default = `16`)
        At most this many objects per tweet, the whole image included (highest scores kept).
    batch_size : `int`, optional (default = `32`)
        Image crops per backbone call.
    max_pixels : `int`, optional (default = `89_478_485`, Pillow's own bomb limit)
        Larger images are refused from their header and become the empty image, counted.
    max_bytes : `int`, optional (default = `50_000_000`)
        Image files larger than this are refused from `stat`, unread (the uniform empty image
        stands in, counted as "too_large").
    """

    def __init__(
        self,
        backbone: ImageBackbone,
        grounder: Optional[PhraseGrounder] = None,
        noun_phrases: Optional[NounPhraseExtractor] = None,
        store_path: Optional[str] = None,
        store_read_only: bool = False,
        max_objects: int = 16,
        batch_size: int = 32,
        max_pixels: int = 89_478_485,
        max_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        if max_objects < 1:
            raise ConfigurationError(f"max_objects must be at least 1 (the whole image), got {max_objects}")
        self.backbone = backbone
        self.grounder = grounder or WholeImageGrounder()
        self.noun_phrases = noun_phrases
        self.store = FeatureStore(store_path, read_only=store_read_only) if store_path else None
        self.max_objects = max_objects
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        # Not in the store key: it decides only whether a file is read, and every refusal shares
        # the empty image's digest.
        self.max_bytes = max_bytes
        self._settings = json.dumps(
            [EXTRACTION_VERSION, backbone.cache_key(), self.grounder.cache_key(),
             noun_phrases.cache_key() if noun_phrases is not None else None,
             max_objects, max_pixels],
            sort_keys=True,
        )

    def get_output_dim(self) -> int:
        return self.backbone.get_output_dim()

    @property
    def grounds_regions(self) -> bool:
        """Whether objects beyond the whole image are expected: a grounder that finds regions (not
        "whole_image", whose single object is the point, nor "grid", whose cells always exist)."""
        return not isinstance(self.grounder, (WholeImageGrounder, GridGrounder))

    def _key(
        self, loaded: LoadedImage, words: Sequence[str], image_id: Optional[str], given: Optional[list[Region]]
    ) -> str:
        payload: list[Any] = [self._settings, loaded.sha256, list(words), image_id or ""]
        if given is not None:
            # Given regions replace the grounder's: they are part of what the features depend on.
            payload.append([[r.label, r.box, r.span, r.score] for r in given])
        return hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()

    def _regions(
        self, loaded: LoadedImage, words: list[str], image_id: Optional[str], given: Optional[list[Region]] = None
    ) -> list[Region]:
        whole = Region(WHOLE_IMAGE, (0.0, 0.0, float(loaded.image.width), float(loaded.image.height)))
        if loaded.status != "ok":
            return [whole]  # nothing to find in the uniform empty image
        if given is not None:
            found = _fitted(given, words, loaded.image.width, loaded.image.height)
        else:
            phrases = self.noun_phrases.extract(words) if self.noun_phrases is not None else []
            found = self.grounder.ground(loaded.image, image_id or "", words, phrases)
        # Merge duplicates (same box for the same words), then keep the best-scored ones.
        unique: dict[tuple, Region] = {}
        for region in found:
            box = tuple(round(v, 1) for v in region.box) if region.box is not None else region.grid_cell
            signature = (box, region.span)
            if signature not in unique or region.score > unique[signature].score:
                unique[signature] = region
        ranked = sorted(unique.values(), key=lambda r: -r.score)[: self.max_objects - 1]
        return [whole, *ranked]

    def _features(self, image: Image.Image, regions: list[Region]) -> torch.Tensor:
        """`(regions, dim)`: crops through the backbone; grid cells from its pooled feature map."""
        vectors: list[Optional[torch.Tensor]] = [None] * len(regions)
        grid = [i for i, r in enumerate(regions) if r.grid_cell is not None]
        if grid:
            k = regions[grid[0]].grid_cell[2]  # type: ignore[index]
            cells = self.backbone.grid_features([image], k)[0]  # (k * k, dim)
            for i in grid:
                row, column, _ = regions[i].grid_cell  # type: ignore[misc]
                vectors[i] = cells[row * k + column]
        crops = [i for i, r in enumerate(regions) if r.grid_cell is None]
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start : start + self.batch_size]
            images = [_crop(image, regions[i]) for i in chunk]
            for i, vector in zip(chunk, self.backbone(images)):
                vectors[i] = vector
        return torch.stack([v.detach().float().cpu() for v in vectors if v is not None])

    def extract(
        self,
        tweets: Sequence[TweetWithImage],
        description: str = "visual objects",
        show_progress: bool = True,
    ) -> tuple[list[VisualObjects], ExtractionSummary]:
        """The visual objects of every tweet, in order, and what it took to get them."""
        summary = ExtractionSummary()
        started = time.time()
        objects: list[VisualObjects] = []
        pending: dict[str, StoredObjects] = {}
        for tweet in progress(tweets, description, len(tweets)) if show_progress else tweets:
            image_bytes: Optional[bytes] = getattr(tweet, "image_bytes", None)
            given: Optional[list[Region]] = getattr(tweet, "regions", None)
            if image_bytes is not None:
                loaded = load_image_bytes(image_bytes, tweet.image_id, max_pixels=self.max_pixels)
            else:
                loaded = load_image(tweet.image_path, max_pixels=self.max_pixels, max_bytes=self.max_bytes)
            summary.images.add(loaded)
            words = list(tweet.words)
            key = self._key(loaded, words, tweet.image_id, given)
            stored = self.store.get(key) if self.store is not None else None
            if stored is None:
                regions = self._regions(loaded, words, tweet.image_id, given)
                stored = StoredObjects(regions, self._features(loaded.image, regions))
                pending[key] = stored
                if self.store is not None and len(pending) >= 64:
                    self.store.put_many(pending)
                    pending = {}
            else:
                summary.cache_hits += 1
            visual = to_visual_objects(stored, len(words), loaded.status, "" if loaded.ok else loaded.message)
            # Given regions, even none, are the caller's word; otherwise a read image left with the whole
            # image only, by a grounder meant to find objects, is worth saying.
            visual.ungrounded = loaded.ok and given is None and self.grounds_regions and len(stored.regions) == 1
            summary.ungrounded += visual.ungrounded
            objects.append(visual)
            summary.tweets += 1
            summary.regions += len(stored.regions)
        if self.store is not None and pending:
            self.store.put_many(pending)
        summary.seconds = time.time() - started
        return objects, summary


def _fitted(given: list[Region], words: list[str], width: int, height: int) -> list[Region]:
    """Given regions as the precomputed grounder treats its sidecar's: a span outside the tweet or a
    box with no area inside the image is dropped, boxes are clipped to the image."""
    fitted = []
    for region in given:
        if region.span is not None and not span_in_tweet(region.span, len(words)):
            continue
        box = clip_box(region.box, width, height) if region.box is not None else None
        if box is None:
            continue
        fitted.append(Region(region.label, box, region.span, region.score))
    return fitted


def _crop(image: Image.Image, region: Region) -> Image.Image:
    if region.box is None:
        return image
    left, top, right, bottom = region.box
    # At least one pixel each way, inside the image: degenerate boxes still give a crop.
    left, top = max(0, int(left)), max(0, int(top))
    right = min(image.width, max(left + 1, int(round(right))))
    bottom = min(image.height, max(top + 1, int(round(bottom))))
    return image.crop((left, top, right, bottom))
