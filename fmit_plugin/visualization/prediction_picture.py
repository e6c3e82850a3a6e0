"""
A picture of one prediction: the image with the visual objects the model saw (boxes labelled by their
phrase), beside the tweet with every predicted entity coloured by type and labelled with its confidence.
A grounded entity (grounded MNER: the entity's `"box"`) gets its box drawn thick in its type's colour,
numbered like the entity's label under its words, so box and words are linked.

Drawn with Pillow only (its built-in scalable font), so it works wherever the plugin does.
"""
import colorsys
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from PIL import Image, ImageDraw, ImageFont

from fmit_plugin.common.file_utils import atomic_write
from fmit_plugin.vision.image_loading import load_image

__all__ = ["TYPE_COLOURS", "render_prediction", "save_prediction_picture", "type_colour"]

# The four Twitter MNER types; any other type gets a stable colour from its name.
TYPE_COLOURS: Mapping[str, tuple[int, int, int]] = {
    "PER": (214, 39, 40),
    "LOC": (44, 160, 44),
    "ORG": (31, 119, 180),
    "MISC": (255, 127, 14),
}
NO_ENTITY_COLOUR = (127, 127, 127)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
IMAGE_PANEL = 320  # the image's longer side, in pixels, once scaled
TEXT_PANEL = 420
MARGIN = 12
FONT_SIZE = 15
SMALL_FONT_SIZE = 11
LINE_GAP = 26  # per wrapped line of the tweet: the word, plus room for its entity label under it


def type_colour(entity_type: Optional[str]) -> tuple[int, int, int]:
    if entity_type is None:
        return NO_ENTITY_COLOUR
    if entity_type in TYPE_COLOURS:
        return TYPE_COLOURS[entity_type]
    hue = int(hashlib.sha256(entity_type.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 0.8)
    return (int(red * 255), int(green * 255), int(blue * 255))


def _font(size: int) -> Any:
    return ImageFont.load_default(size=size)


def _image_panel(image: Optional[Image.Image]) -> tuple[Image.Image, float]:
    """The image scaled so its longer side is `IMAGE_PANEL` (nearest neighbour keeps small synthetic images
    crisp), or a grey "no image" panel; returns the panel and the scale from image pixels to panel pixels."""
    if image is None:
        panel = Image.new("RGB", (IMAGE_PANEL, IMAGE_PANEL), (235, 235, 235))
        draw = ImageDraw.Draw(panel)
        draw.text((IMAGE_PANEL / 2, IMAGE_PANEL / 2), "no image", fill=NO_ENTITY_COLOUR, font=_font(FONT_SIZE),
                  anchor="mm")
        return panel, 1.0
    scale = IMAGE_PANEL / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
    return image.convert("RGB").resize(size, resample), scale


def _entity_at(entities: Sequence[Mapping[str, Any]], start: int, end: int) -> Optional[Mapping[str, Any]]:
    for entity in entities:
        if entity["start"] == start and entity["end"] == end:
            return entity
    return None


def _draw_objects(
    panel: Image.Image, scale: float, objects: Sequence[Mapping[str, Any]], entities: Sequence[Mapping[str, Any]],
    num_words: int,
) -> None:
    """Boxes of the grounded objects; an object whose words are exactly a predicted entity takes its colour.
    Objects spanning the whole tweet without a box of their own (the whole image, grid cells) are not drawn."""
    draw = ImageDraw.Draw(panel)
    font = _font(SMALL_FONT_SIZE)
    for item in objects:
        box = item.get("box")
        if box is None or item.get("label") == "whole image":
            continue
        left, top, right, bottom = (value * scale for value in box)
        if right - left >= panel.width - 1 and bottom - top >= panel.height - 1:
            continue  # the whole image again
        entity = _entity_at(entities, item["start"], item["end"]) if (item["start"], item["end"]) != (0, num_words) \
            else None
        colour = type_colour(entity["type"] if entity else None)
        draw.rectangle([left, top, right - 1, bottom - 1], outline=colour, width=2)
        label = str(item.get("label", ""))[:28]
        text_box = draw.textbbox((0, 0), label, font=font)
        width, height = text_box[2] - text_box[0] + 4, text_box[3] - text_box[1] + 4
        # Above the box when there is room, else inside its top edge.
        y = top - height if top - height >= 0 else top
        x = min(max(0.0, left), panel.width - width)
        draw.rectangle([x, y, x + width, y + height], fill=colour)
        draw.text((x + 2, y + 2 - text_box[1]), label, fill=BACKGROUND, font=font)


def _box_numbers(entities: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Entity index -> its number (1, 2, ...) for the entities with a box, in the tweet's order."""
    with_box = [index for index, entity in enumerate(entities) if entity.get("box") is not None]
    return {index: number for number, index in enumerate(with_box, start=1)}


def _draw_entity_boxes(panel: Image.Image, scale: float, entities: Sequence[Mapping[str, Any]]) -> None:
    """Each grounded entity's box, thick, in its type's colour, tagged "number TYPE" (as under its words)."""
    draw = ImageDraw.Draw(panel)
    font = _font(SMALL_FONT_SIZE)
    for index, number in _box_numbers(entities).items():
        entity = entities[index]
        left, top, right, bottom = (float(value) * scale for value in entity["box"])
        colour = type_colour(entity["type"])
        draw.rectangle([left, top, max(left, right - 1), max(top, bottom - 1)], outline=colour, width=4)
        label = f"{number} {entity['type']}"
        text_box = draw.textbbox((0, 0), label, font=font)
        width, height = text_box[2] - text_box[0] + 4, text_box[3] - text_box[1] + 4
        # Under the box's bottom edge when there is room (object labels sit above boxes), else inside it.
        y = bottom if bottom + height <= panel.height else bottom - height
        x = min(max(0.0, left), panel.width - width)
        draw.rectangle([x, y, x + width, y + height], fill=colour)
        draw.text((x + 2, y + 2 - text_box[1]), label, fill=BACKGROUND, font=font)


def _text_panel(tokens: Sequence[str], entities: Sequence[Mapping[str, Any]], height: int) -> Image.Image:
    """The tweet, wrapped; entity words on their type's colour, with "TYPE confidence" under each entity
    (preceded by its box's number when it is grounded)."""
    font, small = _font(FONT_SIZE), _font(SMALL_FONT_SIZE)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    space = measure.textlength(" ", font=font) + 4  # room for the highlight around entity words
    owner: dict[int, Mapping[str, Any]] = {}  # word index -> its entity
    numbers = {id(entities[index]): number for index, number in _box_numbers(entities).items()}
    for span in entities:
        for index in range(span["start"], span["end"]):
            owner[index] = span
    # Lay out words first, so the panel is as tall as the text needs.
    placed: list[tuple[float, int, str, float]] = []  # x, line, word, width
    x, line = 0.0, 0
    for token in tokens:
        width = measure.textlength(token, font=font)
        if x > 0 and x + width > TEXT_PANEL - 2 * MARGIN:
            x, line = 0.0, line + 1
        placed.append((x, line, token, width))
        x += width + space
    lines = (placed[-1][1] + 1) if placed else 1
    legend_height = 2 * LINE_GAP
    panel = Image.new("RGB", (TEXT_PANEL, max(height, MARGIN * 2 + lines * LINE_GAP + legend_height)), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for index, (x, line, token, width) in enumerate(placed):
        left, top = MARGIN + x, MARGIN + line * LINE_GAP
        entity: Optional[Mapping[str, Any]] = owner.get(index)
        if entity is not None:
            colour = type_colour(entity["type"])
            # Extend the highlight over the space to the next word of the same entity on the same line.
            next_same = index + 1 < len(placed) and owner.get(index + 1) is entity and placed[index + 1][1] == line
            draw.rectangle([left - 2, top - 1, left + width + (space if next_same else 0) + 2, top + FONT_SIZE + 2],
                           fill=colour)
            draw.text((left, top), token, fill=BACKGROUND, font=font)
            if index == entity["start"]:
                confidence = entity.get("confidence")
                label = entity["type"] + (f" {confidence:.2f}" if isinstance(confidence, (int, float)) else "")
                if id(entity) in numbers:
                    label = f"{numbers[id(entity)]} {label}"
                draw.text((left, top + FONT_SIZE + 3), label, fill=colour, font=small)
        else:
            draw.text((left, top), token, fill=TEXT, font=font)
    # Legend: one swatch per type shown (the four standard ones always).
    types = list(TYPE_COLOURS) + sorted({e["type"] for e in entities} - set(TYPE_COLOURS))
    x, y = float(MARGIN), panel.height - MARGIN - FONT_SIZE
    for entity_type in types:
        draw.rectangle([x, y, x + FONT_SIZE, y + FONT_SIZE], fill=type_colour(entity_type))
        draw.text((x + FONT_SIZE + 4, y), entity_type, fill=TEXT, font=small)
        x += FONT_SIZE + 8 + measure.textlength(entity_type, font=small) + 10
    return panel


def render_prediction(prediction: Mapping[str, Any], image: Optional[Image.Image] = None) -> Image.Image:
    """
    The picture of one `allennlp predict` output line (`tokens`, `entities`, optional `objects`): `image`
    (the tweet's image, `None` for a tweet without one) with its objects' boxes, beside the tagged tweet.
    """
    tokens = list(prediction.get("tokens", []))
    entities = list(prediction.get("entities", []))
    image_panel, scale = _image_panel(image)
    if image is not None:
        _draw_objects(image_panel, scale, prediction.get("objects", []), entities, len(tokens))
        _draw_entity_boxes(image_panel, scale, entities)
    text = _text_panel(tokens, entities, image_panel.height)
    height = max(image_panel.height, text.height) + 2 * MARGIN
    picture = Image.new("RGB", (image_panel.width + text.width + 3 * MARGIN, height), BACKGROUND)
    picture.paste(image_panel, (MARGIN, MARGIN))
    picture.paste(text, (image_panel.width + 2 * MARGIN, MARGIN))
    return picture


def save_prediction_picture(
    prediction: Mapping[str, Any], path: Union[str, os.PathLike], image_path: Optional[str] = None
) -> Path:
    """
    Renders `prediction` and writes it as PNG to `path` (atomically: a picture is complete or absent). The
    image is read from `image_path`, else from the prediction's `"image"` when that is a file; an unreadable
    image is drawn as "no image" (the model saw the uniform empty image for it too).
    """
    source = image_path or prediction.get("image")
    image: Optional[Image.Image] = None
    if source and Path(str(source)).is_file():
        loaded = load_image(str(source))
        image = loaded.image if loaded.status == "ok" else None
    target = Path(path)
    atomic_write(target, lambda temporary: render_prediction(prediction, image).save(temporary, format="PNG"))
    return target
