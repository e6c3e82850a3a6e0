"""Reader for the Twitter-2015 / Twitter-2017 multi-modal NER files (IMGID blocks of token<TAB>label)."""
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.vision.visual_objects import ExtractionSummary, VisualObjectExtractor

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"^(O|[BI]-\S+)$")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")


class MalformedDataError(ValueError):
    """A data file line that breaks the format; the message names file and line."""


@dataclass
class ReadStatistics:
    """What one `read` saw, so nothing is dropped without a count."""

    tweets: int = 0
    missing_images: int = 0
    malformed_lines: int = 0
    skipped_tweets: int = 0
    empty_tweets: int = 0
    problems: list[str] = field(default_factory=list)


@DatasetReader.register("twitter_mner")
class TwitterMnerReader(DatasetReader):
    """
    Reads the Twitter MNER format::

        IMGID:1015799
        RT<TAB>O
        George<TAB>B-PER
        ...
        <blank line>

    Each block becomes a `TaggingInstance` with its words, BIO tags, image id and image path.
    The tag set is whatever the file holds (`OTHER` renamed `MISC` by default so Twitter-2015
    and Twitter-2017 share labels). Windows line ends and a UTF-8 byte order mark are accepted.

    Registered as a `DatasetReader` with name "twitter_mner".

    # Parameters

    image_dir : `str`, optional (default = `None`)
        Folder holding `<IMGID>.jpg`. A tweet whose image is missing keeps `image_path = None`
        (the model then uses the paper's uniform empty image); missing images are counted and
        reported once per file, not per tweet.
    map_other_to_misc : `bool`, optional (default = `True`)
        Rename the `OTHER` type (Twitter-2015) to `MISC` (Twitter-2017).
    skip_malformed : `bool`, optional (default = `False`)
        A malformed line (wrong column count, a label outside BIO, tokens before the first
        IMGID) is an error naming file and line. With this on, the tweet holding it is skipped
        instead, and the skips are counted and reported.
    max_instances : `int`, optional (default = `None`)
        Stop after this many tweets per file.
    visual_objects : `VisualObjectExtractor`, optional (default = `None`)
        Gives every tweet its visual objects (whole image, grounded phrases, general words), read
        from its feature store or computed and stored on a miss. Without it the model sees no
        objects and uses its empty-image object.
    """

    def __init__(
        self,
        image_dir: Optional[str] = None,
        map_other_to_misc: bool = True,
        skip_malformed: bool = False,
        max_instances: Optional[int] = None,
        visual_objects: Optional[VisualObjectExtractor] = None,
    ) -> None:
        super().__init__(max_instances=max_instances)
        self.visual_objects = visual_objects
        self.last_visual_summary: Optional[ExtractionSummary] = None
        self.image_dir = Path(image_dir) if image_dir else None
        if self.image_dir is not None and not self.image_dir.is_dir():
            raise FileNotFoundError(f"image_dir is not a folder: {self.image_dir}")
        self.map_other_to_misc = map_other_to_misc
        self.skip_malformed = skip_malformed
        self.last_statistics = ReadStatistics()

    def read(self, file_path: str) -> list[TaggingInstance]:
        self.last_statistics = ReadStatistics()
        instances = super().read(file_path)
        self._report(file_path, self.last_statistics)
        if self.visual_objects is not None:
            self.last_visual_summary = self.visual_objects.extract(instances, f"visual objects {Path(file_path).name}")
            logger.info("%s: %s", file_path, self.last_visual_summary.line())
        return instances

    def _read(self, file_path: Path) -> Iterator[TaggingInstance]:
        stats = self.last_statistics
        image_id: Optional[str] = None
        words: list[str] = []
        tags: list[str] = []
        start_line = 0
        broken = False

        def finish() -> Optional[TaggingInstance]:
            nonlocal broken
            was_broken, broken = broken, False
            if image_id is None:
                return None
            if was_broken:
                stats.skipped_tweets += 1
                return None
            if not words:
                stats.empty_tweets += 1
                stats.problems.append(f"{file_path}:{start_line}: IMGID:{image_id} has no tokens")
                return None
            stats.tweets += 1
            return self._instance(list(words), list(tags), image_id, source=f"{file_path}:{start_line}")

        with open(file_path, encoding="utf-8-sig", newline=None) as handle:
            line_number = 0
            for line_number, raw_line in enumerate(handle, start=1):
                line = raw_line.rstrip("\n").rstrip("\r")
                if line.startswith("IMGID:"):
                    instance = finish()
                    if instance is not None:
                        yield instance
                    image_id = line[len("IMGID:") :].strip()
                    words, tags, start_line = [], [], line_number
                    continue
                if not line.strip():
                    instance = finish()
                    if instance is not None:
                        yield instance
                    image_id, words, tags = None, [], []
                    continue
                problem = self._check_line(line, image_id)
                if problem is not None:
                    message = f"{file_path}:{line_number}: {problem}: {line!r}"
                    if not self.skip_malformed:
                        raise MalformedDataError(message)
                    stats.malformed_lines += 1
                    stats.problems.append(message)
                    broken = True
                    continue
                token, label = line.split("\t")
                words.append(token)
                tags.append(self._map_label(label))
            instance = finish()
            if instance is not None:
                yield instance

    @staticmethod
    def _check_line(line: str, image_id: Optional[str]) -> Optional[str]:
        if image_id is None:
            return "token line before any IMGID line"
        columns = line.split("\t")
        if len(columns) != 2:
            return f"expected 2 tab-separated columns (token, label), found {len(columns)}"
        if not columns[0]:
            return "empty token"
        if not _LABEL.match(columns[1]):
            return f"label {columns[1]!r} is not O, B-TYPE or I-TYPE"
        return None

    def _map_label(self, label: str) -> str:
        if self.map_other_to_misc and label.endswith("-OTHER"):
            return label[:2] + "MISC"
        return label

    def find_image(self, image_id: str) -> Optional[str]:
        """`image_dir/<image_id>` as given, else with a known image extension; `None` if absent."""
        if self.image_dir is None or not image_id:
            return None
        candidates = [self.image_dir / image_id] if Path(image_id).suffix else []
        candidates += [self.image_dir / f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS]
        for candidate in candidates:
            if candidate.is_file():
                return str(candidate)
        return None

    def text_to_instance(
        self, words: list[str], tags: Optional[list[str]] = None, image: Optional[str] = None
    ) -> TaggingInstance:
        """`image` is an image id (looked up in `image_dir`) or a path to an image file. With
        `visual_objects` configured, the instance gets its objects (from the store when cached)."""
        instance = self._instance(words, tags, image)
        if self.visual_objects is not None and words:
            self.visual_objects.extract([instance], show_progress=False)
        return instance

    def _instance(
        self,
        words: list[str],
        tags: Optional[list[str]] = None,
        image: Optional[str] = None,
        source: Optional[str] = None,
    ) -> TaggingInstance:
        image_path: Optional[str] = None
        image_id: Optional[str] = None
        if image:
            image_id = Path(image).stem if Path(image).suffix else image
            image_path = image if Path(image).is_file() else self.find_image(image)
            if image_path is None and self.image_dir is not None:
                self.last_statistics.missing_images += 1
        metadata = {"source": source} if source else {}
        return TaggingInstance(
            words=words, tags=tags, image_id=image_id, image_path=image_path, metadata=metadata
        )

    def _report(self, file_path: str, stats: ReadStatistics) -> None:
        if self.image_dir is not None and stats.missing_images:
            logger.warning(
                "%s: %d of %d tweets have no image in %s; they get the uniform empty image",
                file_path, stats.missing_images, stats.tweets, self.image_dir,
            )
        if stats.malformed_lines or stats.empty_tweets:
            logger.warning(
                "%s: skipped %d tweets over %d malformed lines and %d empty tweets; first: %s",
                file_path, stats.skipped_tweets, stats.malformed_lines, stats.empty_tweets,
                stats.problems[0],
            )
