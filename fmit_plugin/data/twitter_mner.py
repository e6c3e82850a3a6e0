"""Reader for the Twitter-2015 / Twitter-2017 multi-modal NER files (IMGID blocks of token<TAB>label)."""
import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.vision.image_loading import is_url
from fmit_plugin.vision.regions import Region
from fmit_plugin.vision.visual_object_extractor import ExtractionSummary, VisualObjectExtractor

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"^(O|[BI]-\S+)$")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# What `errors="surrogateescape"` turns undecodable bytes into.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# Instances per visual-object extraction when streaming.
_STREAM_CHUNK = 64
# Longest excerpt of a bad line quoted in an error message.
_SHOWN_CHARACTERS = 80


@dataclass
class _Block:
    """The lines between two blank lines (or IMGID lines) being read: one tweet, if well formed."""

    image_id: Optional[str] = None
    start_line: int = 0
    started: bool = False
    broken: bool = False
    lines: int = 0  # non-blank lines in the block
    words: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    token_lines: list[int] = field(default_factory=list)

    def open(self, image_id: Optional[str], line_number: int) -> None:
        self.image_id, self.start_line, self.started = image_id, line_number, True


def _image_id_of(image: str) -> str:
    """The image id of an image id or a path: the file name, without an image extension."""
    name = Path(image).name
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTENSIONS else name


def _image_id_problem(image_id: str) -> Optional[str]:
    """Why `image_id` cannot name a file inside an image folder, or `None`."""
    if not image_id:
        return "IMGID line without an id"
    if "\t" in image_id:
        return "IMGID line with a tab (a token starting with 'IMGID:'? the format cannot hold one)"
    if "/" in image_id or "\\" in image_id or "\x00" in image_id or image_id in {".", ".."}:
        return f"IMGID {image_id!r} is not a plain file name"
    return None


def _is_file(path: str) -> bool:
    """`Path.is_file`, `False` rather than an error for names the file system refuses (too long...)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def _names_a_path(image: str) -> bool:
    """Whether a predictor's `"image"` is meant as a path (or a URL) rather than an image id."""
    return is_url(image) or "/" in image or os.sep in image or os.path.lexists(image)


def _not_utf8(undecodable: "re.Match[str]") -> str:
    byte = ord(undecodable.group()) - 0xDC00
    return f"not UTF-8 (byte 0x{byte:02x} at column {undecodable.start() + 1}); re-encode the file as UTF-8"


def _shown_bytes(line: str) -> str:
    """A line holding undecodable bytes, shown as the bytes it was."""
    raw = line.encode("utf-8", "surrogateescape")
    return repr(raw[:_SHOWN_CHARACTERS]) + ("..." if len(raw) > _SHOWN_CHARACTERS else "")


def _shown(line: str) -> str:
    """A bad line as quoted in a message: repr (so tabs and odd characters show), cut if long."""
    if len(line) > _SHOWN_CHARACTERS:
        return repr(line[:_SHOWN_CHARACTERS]) + f"... ({len(line)} characters)"
    return repr(line)


class MalformedDataError(ValueError):
    """A data file line that breaks the format; the message names file and line."""


# Problem messages kept per read (all problems are counted; only this many are kept as examples).
MAX_PROBLEM_EXAMPLES = 100


@dataclass
class ReadStatistics:
    """
    What one `read` saw, so nothing is dropped without a count.

    tweets : tweets returned.
    malformed_lines : lines that break the format (skipped under `skip_malformed`).
    skipped_tweets : tweets not returned because a line of theirs was malformed (their good lines
        included), among them blocks of token lines with no IMGID line.
    empty_tweets : IMGID lines with no token lines, skipped under `skip_malformed`.
    skipped_lines : non-blank lines that are in no returned tweet (those of skipped and empty
        tweets). Without `max_instances`, every non-blank line of a file is either in a returned
        tweet (its IMGID line or a token line) or counted here.
    duplicate_image_ids : tweets kept although their IMGID appeared earlier in the file
        (`allow_duplicate_image_ids`); without that option a repeat is a malformed line.
    missing_images : tweets with no image file in `image_dir`.
    problems : the first `MAX_PROBLEM_EXAMPLES` messages, each naming file and line.
    """

    tweets: int = 0
    missing_images: int = 0
    malformed_lines: int = 0
    skipped_tweets: int = 0
    empty_tweets: int = 0
    skipped_lines: int = 0
    duplicate_image_ids: int = 0
    problems: list[str] = field(default_factory=list)

    def add_problem(self, message: str) -> None:
        if len(self.problems) < MAX_PROBLEM_EXAMPLES:
            self.problems.append(message)


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
    and Twitter-2017 share labels). Windows line ends, a UTF-8 byte order mark and spaces around
    a label are accepted.

    Anything else that breaks the format is a `MalformedDataError` naming file and line: a line
    that is not UTF-8, a wrong number of tab-separated columns (a tab inside a token gives three),
    an empty token, a label that is not `O`, `B-TYPE` or `I-TYPE`, token lines without an IMGID
    line (before the first IMGID, or after a blank line), an IMGID line with no id or with a path
    in it, an IMGID repeated in the file, and an IMGID with no token lines (an empty tweet).

    Registered as a `DatasetReader` with name "twitter_mner".

    # Parameters

    image_dir : `str`, optional (default = `None`)
        Folder holding `<IMGID>.jpg`. A tweet whose image is missing keeps `image_path = None`
        (the model then uses the paper's uniform empty image); missing images are counted and
        reported once per file, not per tweet.
    map_other_to_misc : `bool`, optional (default = `True`)
        Rename the `OTHER` type (Twitter-2015) to `MISC` (Twitter-2017).
    skip_malformed : `bool`, optional (default = `False`)
        Instead of raising on a malformed line, skip the tweet holding it (and empty tweets), and
        count and report the skips (`last_statistics`, one warning per file).
    max_instances : `int`, optional (default = `None`)
        Stop after this many tweets per file.
    visual_objects : `VisualObjectExtractor`, optional (default = `None`)
        Gives every tweet its visual objects (whole image, grounded phrases, general words), read
        from its feature store or computed and stored on a miss. Without it the model sees no
        objects and uses its empty-image object.
    allow_duplicate_image_ids : `bool`, optional (default = `False`)
        Keep tweets whose IMGID already appeared in the file (two tweets sharing one image); they
        are counted and reported. Without it a repeated IMGID is a malformed line, since it
        usually means a block pasted twice.
    """

    def __init__(
        self,
        image_dir: Optional[str] = None,
        map_other_to_misc: bool = True,
        skip_malformed: bool = False,
        max_instances: Optional[int] = None,
        visual_objects: Optional[VisualObjectExtractor] = None,
        allow_duplicate_image_ids: bool = False,
    ) -> None:
        super().__init__(max_instances=max_instances)
        self.visual_objects = visual_objects
        self._visual_objects_deferred = False
        self.last_visual_summary: Optional[ExtractionSummary] = None
        self.image_dir = Path(image_dir) if image_dir else None
        if self.image_dir is not None and not self.image_dir.is_dir():
            raise FileNotFoundError(f"image_dir is not a folder: {self.image_dir}")
        self.map_other_to_misc = map_other_to_misc
        self.skip_malformed = skip_malformed
        self.allow_duplicate_image_ids = allow_duplicate_image_ids
        self.last_statistics = ReadStatistics()

    def read(self, file_path: str) -> list[TaggingInstance]:
        self.last_statistics = ReadStatistics()
        instances = super().read(file_path)
        self._report(file_path, self.last_statistics)
        if self.visual_objects is not None and not self._visual_objects_deferred:
            self.last_visual_summary = self.attach_visual_objects(
                instances, f"visual objects {Path(file_path).name}", show_progress=True
            )
            logger.info("%s: %s", file_path, self.last_visual_summary.line())
        return instances

    def stream(self, file_path: str) -> Iterator[TaggingInstance]:
        """As `read`, lazily: one tweet at a time (visual objects, if configured, are extracted in
        chunks of a few dozen), statistics reported once the file is exhausted."""
        instances = super().stream(file_path)
        return self._streamed(file_path, instances)

    def _streamed(self, file_path: str, instances: Iterator[TaggingInstance]) -> Iterator[TaggingInstance]:
        self.last_statistics = ReadStatistics()
        chunk: list[TaggingInstance] = []
        for instance in instances:
            if self.visual_objects is None or self._visual_objects_deferred:
                yield instance
                continue
            chunk.append(instance)
            if len(chunk) >= _STREAM_CHUNK:
                yield from self._with_visual_objects(chunk)
                chunk = []
        yield from self._with_visual_objects(chunk)
        self._report(file_path, self.last_statistics)

    def _with_visual_objects(self, chunk: list[TaggingInstance]) -> list[TaggingInstance]:
        if chunk:
            self.attach_visual_objects(chunk)
        return chunk

    @contextlib.contextmanager
    def visual_objects_deferred(self) -> Iterator[None]:
        """Inside, `read` and `stream` leave instances without visual objects, for
        `attach_visual_objects` to give them later: a distributed worker extracts its own share only."""
        self._visual_objects_deferred = True
        try:
            yield
        finally:
            self._visual_objects_deferred = False

    def attach_visual_objects(
        self, instances: list[TaggingInstance], description: str = "visual objects", show_progress: bool = False
    ) -> ExtractionSummary:
        """Gives every instance its visual objects (`visual_objects` must be set); returns what it took."""
        assert self.visual_objects is not None
        objects, summary = self.visual_objects.extract(instances, description, show_progress=show_progress)
        for instance, visual in zip(instances, objects, strict=True):
            instance.visual = visual
            if visual.image_status != "ok" and (instance.image_id or instance.image_path or instance.image_bytes):
                # No path (nor bytes) means the id was looked up and not found: say where it was looked for.
                found = instance.image_path or instance.image_bytes is not None
                message = visual.image_message if found else self._not_found(instance.image_id)
                instance.warnings.append(
                    f"image not used ({visual.image_status}: {message}); the model saw the uniform empty image"
                )
            if visual.ungrounded:
                instance.warnings.append(
                    f"no regions for image {instance.image_id or instance.image_path or '(bytes)'}: none given "
                    '("regions"), none in the grounder\'s sidecar, or none found by its detector; '
                    "the model saw the whole image only"
                )
        return summary

    def _not_found(self, image_id: Optional[str]) -> str:
        if self.image_dir is None:
            return f"{image_id!r} is no file, and the dataset reader has no image_dir to look it up in"
        return f"no image {image_id!r} in image_dir {self.image_dir}"

    def _read(self, file_path: Path) -> Iterator[TaggingInstance]:
        stats = self.last_statistics
        first_seen: dict[str, int] = {}
        block = _Block()

        def malformed(line_number: int, problem: str, shown: str) -> None:
            message = f"{file_path}:{line_number}: {problem}: {shown}"
            if not self.skip_malformed:
                raise MalformedDataError(message)
            stats.malformed_lines += 1
            stats.add_problem(message)
            block.broken = True

        def finish() -> Optional[TaggingInstance]:
            nonlocal block
            done, block = block, _Block()
            if not done.started:
                return None
            if done.broken:
                stats.skipped_tweets += 1
                stats.skipped_lines += done.lines
                return None
            if not done.words:
                message = f"{file_path}:{done.start_line}: IMGID:{done.image_id} has no token lines (empty tweet)"
                if not self.skip_malformed:
                    raise MalformedDataError(message)
                stats.empty_tweets += 1
                stats.skipped_lines += done.lines
                stats.add_problem(message)
                return None
            stats.tweets += 1
            assert done.image_id is not None
            instance = self._instance(done.words, done.tags, done.image_id, f"{file_path}:{done.start_line}")
            # Each token's own line, for errors about one token (an unknown label): see Vocabulary.check_labels.
            instance.metadata.update(file=str(file_path), token_lines=done.token_lines)
            return instance

        # surrogateescape: bytes that are not UTF-8 become lone surrogates, found per line below,
        # so such a file fails with its line number rather than a decoder traceback.
        with open(file_path, encoding="utf-8-sig", errors="surrogateescape", newline=None) as handle:
            for line_number, raw_line in enumerate(handle, start=1):
                line = raw_line.rstrip("\n").rstrip("\r")
                undecodable = _UNDECODABLE.search(line)
                shown = _shown(line) if undecodable is None else _shown_bytes(line)
                if line.startswith("IMGID:"):
                    instance = finish()
                    if instance is not None:
                        yield instance
                    image_id = line[len("IMGID:") :].strip()
                    block.open(image_id, line_number)
                    block.lines += 1
                    problem = _not_utf8(undecodable) if undecodable else _image_id_problem(image_id)
                    if problem is None and image_id in first_seen:
                        if self.allow_duplicate_image_ids:
                            stats.duplicate_image_ids += 1
                            stats.add_problem(f"{file_path}:{line_number}: IMGID:{image_id} repeats line "
                                              f"{first_seen[image_id]} (kept)")
                        else:
                            problem = (f"IMGID {image_id!r} already appeared on line {first_seen[image_id]} "
                                       "(allow_duplicate_image_ids keeps both)")
                    first_seen.setdefault(image_id, line_number)
                    if problem is not None:
                        malformed(line_number, problem, shown)
                    continue
                if not line.strip():
                    instance = finish()
                    if instance is not None:
                        yield instance
                    continue
                if not block.started:
                    block.open(None, line_number)
                block.lines += 1
                if undecodable is not None:
                    malformed(line_number, _not_utf8(undecodable), shown)
                    continue
                if block.image_id is None:
                    malformed(line_number, "token line without an IMGID line before it (missing IMGID, "
                                           "or a blank line inside a tweet?)", shown)
                    continue
                parsed = self._parse_token_line(line)
                if isinstance(parsed, str):
                    malformed(line_number, parsed, shown)
                    continue
                block.words.append(parsed[0])
                block.tags.append(self._map_label(parsed[1]))
                block.token_lines.append(line_number)
            instance = finish()
            if instance is not None:
                yield instance

    @staticmethod
    def _parse_token_line(line: str) -> Union[tuple[str, str], str]:
        """(token, label), or what is wrong with the line."""
        columns = line.split("\t")
        if len(columns) != 2:
            hint = "no tab between token and label" if len(columns) == 1 else "a tab inside the token?"
            return f"expected 2 tab-separated columns (token, label), found {len(columns)} ({hint})"
        token, label = columns[0], columns[1].strip()
        if not token:
            return "empty token"
        if not _LABEL.match(label):
            return f"label {label!r} is not O, B-TYPE or I-TYPE"
        return token, label

    def _map_label(self, label: str) -> str:
        if self.map_other_to_misc and label.endswith("-OTHER"):
            return label[:2] + "MISC"
        return label

    def find_image(self, image_id: str) -> Optional[str]:
        """`image_dir/<image_id>` as given, else with a known image extension; `None` if absent, if
        the id is not a plain file name (it must not reach outside `image_dir`), or if the match is
        not a regular file (a folder named like an image, a dangling link, a symlink loop)."""
        if self.image_dir is None or _image_id_problem(image_id) is not None:
            return None
        candidates = [self.image_dir / image_id] if Path(image_id).suffix else []
        candidates += [self.image_dir / f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS]
        for candidate in candidates:
            if _is_file(str(candidate)):
                return str(candidate)
        return None

    def text_to_instance(
        self,
        words: list[str],
        tags: Optional[list[str]] = None,
        image: Optional[str] = None,
        image_bytes: Optional[bytes] = None,
        regions: Optional[list[Region]] = None,
    ) -> TaggingInstance:
        """`image` is an image id (looked up in `image_dir`) or a path to an image file; with
        `image_bytes` (an image in memory) it only names the image (its id), and no file is looked
        for. `regions`, when given, are this tweet's groundings, used instead of the grounder's.
        With `visual_objects` configured, the instance gets its objects (from the store when cached).
        An image the model will not see is always said in `warnings`: why it could not be used, or
        that the model is text-only, or that the tweet has no words."""
        if image_bytes is not None:
            instance = self._instance(words, tags, None)
            instance.image_id = _image_id_of(image) if image else None
            instance.image_bytes = image_bytes
        else:
            instance = self._instance(words, tags, image, allow_path=True)
        instance.regions = regions
        has_image = bool(image) or image_bytes is not None
        if has_image and self.visual_objects is None:
            instance.warnings.append("image ignored: this model is text-only (its dataset reader has no "
                                     "visual_objects)")
        elif has_image and not words:
            instance.warnings.append("image not used: the tweet has no words to tag")
        elif self.visual_objects is not None and words:
            self.attach_visual_objects([instance])
        if regions and self.visual_objects is None:
            instance.warnings.append('"regions" ignored: this model uses no visual objects')
        return instance

    def _instance(
        self,
        words: list[str],
        tags: Optional[list[str]] = None,
        image: Optional[str] = None,
        source: Optional[str] = None,
        allow_path: bool = False,
    ) -> TaggingInstance:
        """`allow_path`: `image` may be a path to an image file (the predictor's input); an IMGID
        read from a data file is only ever looked up in `image_dir`."""
        image_path: Optional[str] = None
        image_id: Optional[str] = None
        if image:
            image_id = _image_id_of(image)
            if allow_path and _is_file(image):
                image_path = image
            else:
                image_path = self.find_image(image)
            if image_path is None and self.image_dir is not None:
                self.last_statistics.missing_images += 1
            if image_path is None and allow_path and _names_a_path(image):
                # A URL, a path or a thing that is no regular file (a folder, FIFO, device): the
                # image loader says what is wrong with it, naming it, without reading it.
                image_path = image
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
                "%s: skipped %d tweets over %d malformed lines and %d empty tweets (%d lines in all); first: %s",
                file_path, stats.skipped_tweets, stats.malformed_lines, stats.empty_tweets, stats.skipped_lines,
                stats.problems[0],
            )
        if stats.duplicate_image_ids:
            logger.warning("%s: kept %d tweets whose IMGID appeared before in the file; first: %s",
                           file_path, stats.duplicate_image_ids,
                           next((p for p in stats.problems if p.endswith("(kept)")), ""))
