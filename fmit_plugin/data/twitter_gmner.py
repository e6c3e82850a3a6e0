"""Reader for Twitter-GMNER (Yu et al., ACL 2023): the MNER text files plus each entity's boxes in Pascal VOC xml."""
import logging
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.span_utils import bio_tags_to_spans
from fmit_plugin.data.twitter_mner import MAX_PROBLEM_EXAMPLES, MalformedDataError, TwitterMnerReader
from fmit_plugin.vision.regions import Box
from fmit_plugin.vision.visual_object_extractor import VisualObjectExtractor

logger = logging.getLogger(__name__)


@dataclass
class GroundingStatistics:
    """
    What the last `read` found in the xml annotations (`TwitterGmnerReader.last_grounding_statistics`).

    tweets_with_xml : tweets whose image has an xml file.
    objects : `<object>`s read (one box each).
    entities : gold entities of the tweets read; `groundable_entities` of them got at least one box.
    loosely_matched_names : object names that matched their entity only up to case and spacing.
    names_on_several_entities : object names that matched several entity spans of their tweet (the same
        name written twice); the box goes to each.
    skipped_tweets : tweets left out (`skip_malformed`) for a broken xml file, a name matching no entity
        or a box outside the image.
    problems : the first `MAX_PROBLEM_EXAMPLES` messages, each naming the xml file.
    """

    tweets_with_xml: int = 0
    objects: int = 0
    entities: int = 0
    groundable_entities: int = 0
    loosely_matched_names: int = 0
    names_on_several_entities: int = 0
    skipped_tweets: int = 0
    problems: list[str] = field(default_factory=list)

    def add_problem(self, message: str) -> None:
        if len(self.problems) < MAX_PROBLEM_EXAMPLES:
            self.problems.append(message)


def _loose(text: str) -> str:
    """A name up to case and spacing: "Selwyn township" and "SelwynTownship" read the same."""
    return "".join(text.split()).casefold()


def read_voc_objects(path: Path) -> tuple[tuple[int, int], list[tuple[str, Box]]]:
    """
    The image size (width, height) and the (name, box) of every `<object>` of a Pascal VOC file.
    `MalformedDataError` naming the file for xml that does not parse, a missing or non-positive
    size, an object without name or box, a box that is not four numbers with x0 < x1, y0 < y1, or
    one outside the stated size (a box on the border, xmax = width, is inside).
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise MalformedDataError(f"{path}: not a readable Pascal VOC xml file ({error})") from error

    def number(element: Optional[ElementTree.Element], what: str) -> float:
        try:
            assert element is not None and element.text is not None
            return float(element.text)
        except (AssertionError, ValueError):
            shown = None if element is None else element.text
            raise MalformedDataError(f"{path}: {what} must be a number, got {shown!r}") from None

    width, height = number(root.find("size/width"), "<size><width>"), number(root.find("size/height"), "<size><height>")
    if width <= 0 or height <= 0:
        raise MalformedDataError(f"{path}: <size> is {width:g} x {height:g}; both must be positive")
    objects = []
    for index, element in enumerate(root.findall("object"), start=1):
        name = (element.findtext("name") or "").strip()
        if not name:
            raise MalformedDataError(f"{path}: <object> {index} has no <name>")
        box = tuple(number(element.find(f"bndbox/{key}"), f"<object> {index} ({name!r}) <bndbox><{key}>")
                    for key in ("xmin", "ymin", "xmax", "ymax"))
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            raise MalformedDataError(f"{path}: <object> {index} ({name!r}) has xmax <= xmin or ymax <= ymin: {box}")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise MalformedDataError(
                f"{path}: <object> {index} ({name!r}) box {box} lies outside the {width:g} x {height:g} image"
            )
        objects.append((name, (x0, y0, x1, y1)))
    return (int(width), int(height)), objects


@DatasetReader.register("twitter_gmner")
class TwitterGmnerReader(TwitterMnerReader):
    """
    Reads Twitter-GMNER: the text as `twitter_mner` reads it, and for every tweet its image's
    `<entity_boxes_dir>/<IMGID>.xml` (Pascal VOC: `<object><name>` the entity's text, `<bndbox>` its
    box in pixels of the original image). Each gold entity gets the boxes of the objects named
    like it, in `TaggingInstance.entity_boxes`; an entity with none (and every entity of a tweet
    without xml file) is not groundable.

    Names are matched to the tweet's entity spans by their words joined with spaces, else up to
    case and spacing (`loosely_matched_names`); a name found on several spans (an entity written
    twice) gives its boxes to each. A name matching no entity, an xml file that does not parse, and
    a box outside the image size the file states are a `MalformedDataError` naming the file, or with
    `skip_malformed` a skipped tweet, counted and reported (`last_grounding_statistics`). Boxes are
    kept in the file's pixel coordinates (the dataset's evaluation compares them as they are).

    Registered as a `DatasetReader` with name "twitter_gmner".

    # Parameters

    entity_boxes_dir : `str`
        The folder of `<IMGID>.xml` files (Twitter-GMNER's `xml/`).
    image_dir, map_other_to_misc, skip_malformed, max_instances, visual_objects, allow_duplicate_image_ids
        As for `twitter_mner`.
    """

    def __init__(
        self,
        entity_boxes_dir: str,
        image_dir: Optional[str] = None,
        map_other_to_misc: bool = True,
        skip_malformed: bool = False,
        max_instances: Optional[int] = None,
        visual_objects: Optional[VisualObjectExtractor] = None,
        allow_duplicate_image_ids: bool = False,
    ) -> None:
        super().__init__(
            image_dir=image_dir, map_other_to_misc=map_other_to_misc, skip_malformed=skip_malformed,
            max_instances=max_instances, visual_objects=visual_objects,
            allow_duplicate_image_ids=allow_duplicate_image_ids,
        )
        self.entity_boxes_dir = Path(entity_boxes_dir)
        if not self.entity_boxes_dir.is_dir():
            raise FileNotFoundError(f"entity_boxes_dir is not a folder: {self.entity_boxes_dir}")
        self.last_grounding_statistics = GroundingStatistics()

    def _read(self, file_path: Path) -> Iterator[TaggingInstance]:
        stats = self.last_grounding_statistics = GroundingStatistics()
        for instance in super()._read(file_path):
            try:
                instance.entity_boxes = self.entity_boxes(instance)
            except MalformedDataError as error:
                if not self.skip_malformed:
                    raise
                stats.skipped_tweets += 1
                stats.add_problem(str(error))
                continue
            stats.entities += len(instance.entity_boxes)
            stats.groundable_entities += sum(1 for boxes in instance.entity_boxes.values() if boxes)
            yield instance
        if stats.skipped_tweets:
            logger.warning("%s: skipped %d tweets for their xml annotations; first: %s",
                           file_path, stats.skipped_tweets, stats.problems[0])
        logger.info(
            "%s: %d of %d entities groundable (%d tweets with xml, %d boxes; %d names matched up to case / "
            "spacing, %d on several entities)", file_path, stats.groundable_entities, stats.entities,
            stats.tweets_with_xml, stats.objects, stats.loosely_matched_names, stats.names_on_several_entities,
        )

    def entity_boxes(self, instance: TaggingInstance) -> dict[tuple[int, int], list[Box]]:
        """The boxes of each gold entity of `instance` (read from a data file), from its image's xml file."""
        assert instance.tags is not None
        spans = sorted((start, end) for _, start, end in bio_tags_to_spans(instance.tags))
        boxes: dict[tuple[int, int], list[Box]] = {span: [] for span in spans}
        path = self.entity_boxes_dir / f"{instance.image_id}.xml"
        if instance.image_id is None or not path.is_file():
            return boxes
        stats = self.last_grounding_statistics
        stats.tweets_with_xml += 1
        _, objects = read_voc_objects(path)
        texts = {span: " ".join(instance.words[span[0] : span[1]]) for span in spans}
        for name, box in objects:
            matched = [span for span in spans if texts[span] == name]
            if not matched:
                matched = [span for span in spans if _loose(texts[span]) == _loose(name)]
                stats.loosely_matched_names += bool(matched)
            if not matched:
                where = instance.metadata.get("source", f"IMGID:{instance.image_id}")
                raise MalformedDataError(
                    f"{path}: object name {name!r} matches no entity of the tweet at {where} "
                    f"(its entities: {sorted(set(texts.values()))})"
                )
            stats.names_on_several_entities += len(matched) > 1
            stats.objects += 1
            for span in matched:
                boxes[span].append(box)
        return boxes
