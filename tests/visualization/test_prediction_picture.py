"""Pictures of predictions: boxes on the image in their entity's colour, entities highlighted in the text."""
import numpy
from PIL import Image

from fmit_plugin.visualization.prediction_picture import (
    IMAGE_PANEL,
    MARGIN,
    NO_ENTITY_COLOUR,
    TYPE_COLOURS,
    render_prediction,
    save_prediction_picture,
    type_colour,
)

TOKENS = ["met", "Vene", "Mevi", "and", "Pusume", "at", "the", "show"]
ENTITIES = [
    {"text": "Vene Mevi", "type": "LOC", "start": 1, "end": 3, "confidence": 0.93},
    {"text": "Pusume", "type": "PER", "start": 4, "end": 5, "confidence": 0.5},
]
OBJECTS = [
    {"label": "whole image", "box": [0, 0, 64, 64], "start": 0, "end": 8},
    {"label": "Vene Mevi", "box": [4, 4, 20, 20], "start": 1, "end": 3},
    {"label": "the show", "box": [40, 40, 60, 60], "start": 6, "end": 8},
]


def _prediction(**changes):
    return {"tokens": TOKENS, "tags": [], "entities": ENTITIES, "objects": OBJECTS, **changes}


def _pixels(picture: Image.Image) -> numpy.ndarray:
    return numpy.asarray(picture.convert("RGB")).astype(int)


def _has_colour(pixels: numpy.ndarray, colour) -> bool:
    return bool((numpy.abs(pixels - numpy.array(colour)).sum(axis=-1) == 0).any())


def test_object_boxes_take_the_colour_of_the_entity_on_their_words():
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    picture = render_prediction(_prediction(), image)
    scale = IMAGE_PANEL / 64
    pixels = _pixels(picture)
    # The left edge of the "Vene Mevi" box (image x = 4), halfway down it, in panel coordinates.
    x, y = MARGIN + int(4 * scale), MARGIN + int(12 * scale)
    assert tuple(pixels[y, x]) == TYPE_COLOURS["LOC"]
    # "the show" is no entity: its box is grey.
    x, y = MARGIN + int(40 * scale), MARGIN + int(50 * scale)
    assert tuple(pixels[y, x]) == NO_ENTITY_COLOUR
    # The whole image is not outlined: its corner keeps the image's white.
    assert tuple(pixels[MARGIN + IMAGE_PANEL // 2, MARGIN]) == (255, 255, 255)


def test_entities_are_highlighted_in_their_type_colour_in_the_text():
    picture = render_prediction(_prediction(), Image.new("RGB", (64, 64), (255, 255, 255)))
    text_panel = _pixels(picture)[:, MARGIN + IMAGE_PANEL + MARGIN :]
    top_line = text_panel[: MARGIN + 20]
    assert _has_colour(top_line, TYPE_COLOURS["LOC"])
    assert _has_colour(top_line, TYPE_COLOURS["PER"])
    # Without entities the first text line holds no type colour at all (the legend is further down).
    plain = _pixels(render_prediction(_prediction(entities=[]), Image.new("RGB", (64, 64), (255, 255, 255))))
    plain_top = plain[: MARGIN + 20, MARGIN + IMAGE_PANEL + MARGIN :]
    assert not _has_colour(plain_top, TYPE_COLOURS["LOC"]) and not _has_colour(plain_top, TYPE_COLOURS["PER"])


def test_a_tweet_without_image_gets_a_no_image_panel_and_long_tweets_wrap():
    long_tweet = _prediction(tokens=TOKENS * 20, objects=[])
    short = render_prediction(_prediction(objects=[]), None)
    tall = render_prediction(long_tweet, None)
    assert short.height == IMAGE_PANEL + 2 * MARGIN
    assert tall.height > short.height  # 160 words do not fit beside a 320-pixel image
    assert short.width == tall.width


def test_unknown_types_get_a_stable_colour_of_their_own():
    assert type_colour("EVENT") == type_colour("EVENT")
    assert type_colour("EVENT") not in TYPE_COLOURS.values()
    assert type_colour(None) == NO_ENTITY_COLOUR


def test_save_reads_the_image_and_leaves_only_the_png(tmp_path):
    image_path = tmp_path / "tweet.png"
    Image.new("RGB", (64, 64), (0, 0, 0)).save(image_path)
    target = save_prediction_picture(_prediction(image=str(image_path)), tmp_path / "out" / "p.png")
    assert sorted(p.name for p in target.parent.iterdir()) == ["p.png"]
    with Image.open(target) as written:
        assert written.format == "PNG"
        pixels = _pixels(written)
    # The black image was read and drawn.
    assert tuple(pixels[MARGIN + IMAGE_PANEL // 2, MARGIN + IMAGE_PANEL // 2]) == (0, 0, 0)
    # An image that cannot be read is drawn as "no image" rather than failing.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    other = save_prediction_picture(_prediction(image=str(broken)), tmp_path / "out" / "q.png")
    with Image.open(other) as written:
        assert tuple(_pixels(written)[MARGIN + 5, MARGIN + 5]) == (235, 235, 235)


def test_grounded_entities_get_their_box_in_their_colour_numbered_like_their_words():
    grounded = [{**ENTITIES[0], "box": None, "box_confidence": 0.9},
                {**ENTITIES[1], "box": [30.0, 8.0, 50.0, 28.0], "box_confidence": 0.8}]
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    # Candidates tied to no phrase (proposals) are drawn grey; the PER entity's box in red, over its proposal.
    proposals = [{"label": "proposal", "box": [30, 8, 50, 28], "start": 0, "end": 8}]
    pixels = _pixels(render_prediction(_prediction(entities=grounded, objects=proposals), white))
    scale = IMAGE_PANEL / 64
    # The left edge of the PER box (image x = 30), halfway down it, and 3 panel pixels inside it (thick).
    x, y = MARGIN + int(30 * scale), MARGIN + int(18 * scale)
    assert tuple(pixels[y, x]) == TYPE_COLOURS["PER"] and tuple(pixels[y, x + 3]) == TYPE_COLOURS["PER"]
    # The LOC entity has no box: no green anywhere on the image panel.
    assert not _has_colour(pixels[:, : MARGIN + IMAGE_PANEL], TYPE_COLOURS["LOC"])
    # Without the box the picture has no red on the image panel: the box is what drew it.
    ungrounded = [{**entity, "box": None} for entity in grounded]
    plain = _pixels(render_prediction(_prediction(entities=ungrounded, objects=proposals), white))
    assert not _has_colour(plain[:, : MARGIN + IMAGE_PANEL], TYPE_COLOURS["PER"])
    # The label under the PER words carries the box's number: the text panels differ.
    assert (pixels[:, MARGIN + IMAGE_PANEL + MARGIN :] != plain[:, MARGIN + IMAGE_PANEL + MARGIN :]).any()
