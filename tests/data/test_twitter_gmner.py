from pathlib import Path

import pytest

from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.twitter_gmner import TwitterGmnerReader, read_voc_objects
from fmit_plugin.data.twitter_mner import MalformedDataError

TEXT = (
    "IMGID:1\nRT\tO\nJustin\tB-PER\nBieber\tI-PER\nin\tO\nParis\tB-LOC\n\n"
    "IMGID:2\nRavens\tB-ORG\nbeat\tO\nthe\tO\nravens\tB-ORG\n\n"
    "IMGID:3\nno\tO\nxml\tO\nBoston\tB-LOC\n\n"
)


def _voc(width: int, height: int, objects: list[tuple[str, tuple[float, float, float, float]]]) -> str:
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (x0, y0, x1, y1) in objects:
        parts.append(f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                     f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def _dataset(tmp_path: Path, xml: dict[str, str], text: str = TEXT) -> tuple[Path, Path]:
    (tmp_path / "xml").mkdir()
    for image_id, content in xml.items():
        (tmp_path / "xml" / f"{image_id}.xml").write_text(content, encoding="utf-8")
    data = tmp_path / "train.txt"
    data.write_text(text, encoding="utf-8")
    return data, tmp_path / "xml"


def test_boxes_go_to_their_entities_by_name(tmp_path):
    data, xml = _dataset(tmp_path, {
        # Two boxes of one entity, one on the image border; a name in other case and spacing.
        "1": _voc(500, 400, [("Justin Bieber", (10, 20, 110, 220)), ("JustinBieber", (300, 0, 500, 400))]),
        # One name, two spans of the same text up to case: the box goes to both.
        "2": _voc(100, 100, [("Ravens", (1, 2, 30, 40))]),
    })
    reader = TwitterGmnerReader(entity_boxes_dir=str(xml))
    first, second, third = reader.read(str(data))
    assert first.entity_boxes == {(1, 3): [(10, 20, 110, 220), (300, 0, 500, 400)], (4, 5): []}
    assert second.entity_boxes == {(0, 1): [(1, 2, 30, 40)], (3, 4): []}
    assert third.entity_boxes == {(2, 3): []}  # no xml file: not groundable
    stats = reader.last_grounding_statistics
    assert (stats.tweets_with_xml, stats.objects, stats.entities, stats.groundable_entities) == (2, 3, 5, 2)
    assert (stats.loosely_matched_names, stats.names_on_several_entities) == (1, 0)


def test_a_name_on_two_spans_of_the_same_text_boxes_both(tmp_path):
    text = "IMGID:7\nRavens\tB-ORG\nbeat\tO\nRavens\tB-ORG\n\n"
    data, xml = _dataset(tmp_path, {"7": _voc(50, 50, [("Ravens", (0, 0, 10, 10))])}, text)
    reader = TwitterGmnerReader(entity_boxes_dir=str(xml))
    (instance,) = reader.read(str(data))
    assert instance.entity_boxes == {(0, 1): [(0, 0, 10, 10)], (2, 3): [(0, 0, 10, 10)]}
    assert reader.last_grounding_statistics.names_on_several_entities == 1


@pytest.mark.parametrize(("content", "message"), [
    (_voc(100, 100, [("Paris Hilton", (0, 0, 10, 10))]), "object name 'Paris Hilton' matches no entity"),
    (_voc(100, 100, [("Paris", (0, 0, 101, 10))]), "lies outside the 100 x 100 image"),
    (_voc(100, 100, [("Paris", (-1, 0, 10, 10))]), "lies outside"),
    (_voc(100, 100, [("Paris", (20, 0, 10, 10))]), "xmax <= xmin"),
    ("<annotation><size><width>100</width>", "not a readable Pascal VOC xml file"),
    (_voc(0, 100, []), "both must be positive"),
    (_voc(100, 100, [("Paris", (0, 0, 10, 10))]).replace("<xmax>10</xmax>", "<xmax>ten</xmax>"),
     "<xmax> must be a number, got 'ten'"),
])
def test_bad_xml_is_an_error_naming_the_file_or_a_counted_skip(tmp_path, content, message):
    data, xml = _dataset(tmp_path, {"1": content})
    with pytest.raises(MalformedDataError, match="1.xml") as error:
        TwitterGmnerReader(entity_boxes_dir=str(xml)).read(str(data))
    assert message in str(error.value)
    reader = TwitterGmnerReader(entity_boxes_dir=str(xml), skip_malformed=True)
    instances = reader.read(str(data))
    assert [i.image_id for i in instances] == ["2", "3"]
    assert reader.last_grounding_statistics.skipped_tweets == 1
    assert message in reader.last_grounding_statistics.problems[0]


def test_registered_and_needs_its_folder(tmp_path):
    assert DatasetReader.by_name("twitter_gmner") is TwitterGmnerReader
    with pytest.raises(FileNotFoundError, match="entity_boxes_dir"):
        TwitterGmnerReader(entity_boxes_dir=str(tmp_path / "absent"))


def test_prediction_input_has_no_gold_boxes(tmp_path):
    _, xml = _dataset(tmp_path, {})
    instance = TwitterGmnerReader(entity_boxes_dir=str(xml)).text_to_instance(["Paris"], image="1")
    assert instance.entity_boxes is None


# ------------------------------------------------------------------ the real Twitter-GMNER files


def _gmner(shared_data: Path) -> Path:
    root = shared_data / "twitter-gmner"
    if not (root / "xml").is_dir():
        pytest.skip(f"{root} is absent")
    return root


@pytest.mark.parametrize(("split", "tweets"), [("train", 7000), ("dev", 1500), ("test", 1500)])
def test_real_files_read_whole(shared_data, split, tweets):
    root = _gmner(shared_data)
    reader = TwitterGmnerReader(entity_boxes_dir=str(root / "xml"))
    instances = reader.read(str(root / "txt" / f"{split}.txt"))
    stats = reader.last_grounding_statistics
    assert len(instances) == tweets and stats.skipped_tweets == 0
    # Every object found its entity; about half the entities are groundable (the paper: 60 % of tweets have one).
    assert stats.objects == sum(len(_boxes_and_widths(root, i)) for i in instances)
    assert 0.3 < stats.groundable_entities / stats.entities < 0.7
    # Quirks of the real files: entities with several boxes, names written twice in a tweet, boxes on the border.
    assert any(len(boxes) > 1 for i in instances for boxes in i.entity_boxes.values())
    assert stats.names_on_several_entities > 0
    assert any(box[2] == width for i in instances for box, width in _boxes_and_widths(root, i))


def _boxes_and_widths(root: Path, instance):
    path = root / "xml" / f"{instance.image_id}.xml"
    if not path.is_file():
        return []
    (width, _), objects = read_voc_objects(path)
    return [(box, width) for _, box in objects]


def test_real_xml_quirks_hand_checked(shared_data):
    root = _gmner(shared_data)
    # 1001621.xml: three boxes for "Basic Instincts"; 1000046.xml: a box touching the right and bottom border.
    size, objects = read_voc_objects(root / "xml" / "1001621.xml")
    assert size == (600, 450) and [name for name, _ in objects] == ["Basic Instincts"] * 3
    size, objects = read_voc_objects(root / "xml" / "1000046.xml")
    assert size == (500, 706) and objects == [("Bieber", (132.0, 22.0, 500.0, 706.0))]
