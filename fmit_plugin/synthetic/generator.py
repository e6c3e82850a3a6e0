"""
A deterministic synthetic Twitter MNER benchmark in which the image, not the text, decides an entity's type.

Entity names are invented words built from random syllables, drawn from one pool shared by every type and every
split, and each mention gets its type independently of its name: the same name is a person in one tweet and an
organisation in the next, so its spelling says nothing about its type. Most tweets come from neutral templates
("{A} vs {B} tonight !") where only the image can tell the types apart; some come from cue templates
("flying to {LOC} tomorrow") so that the text channel matters too.

Every tweet with an image shows one region per entity mention, drawn in its type's look (`VISUAL_VOCABULARY`):

    PER  = red filled circle        LOC  = green filled triangle
    ORG  = blue filled square       MISC = yellow filled plus-shaped cross

on a cluttered light background (pixel noise, faint grey lines and dots), plus 0-2 distractor regions in looks
that belong to no type (purple hexagon outlines, grey filled diamonds). Regions never overlap. Some tweets have
no image file at all, some a uniform blank image without regions.

The output folder holds::

    train.txt valid.txt test.txt   IMGID blocks of token<TAB>label, read by `TwitterMnerReader`
    images/<image_id>.png          one image per tweet, except the tweets whose image is missing
    groundings.jsonl               the sidecar of the `precomputed` grounder: for every image, one region per
                                   entity mention (its words, span and drawn box) and some of the tweet's
                                   non-entity phrases grounded to distractor boxes; blank images get no regions,
                                   missing images no line

With `grounded_entities=True` (grounded MNER, `python -m fmit_plugin.synthetic --grounded-entities`) also::

    xml/<image_id>.xml             each entity's drawn box in Twitter-GMNER's Pascal VOC format (read by the
                                   `twitter_gmner` reader); images without entity regions get no file, so
                                   the entities of blank and missing images are not groundable
    proposals.jsonl                class-agnostic candidates for the `proposals` grounder: the box of every
                                   drawn shape, entity or distractor, each corner jittered by up to
                                   `PROPOSAL_JITTER` of its side, shuffled (blank images: no boxes)

and each entity's shape carries its name's identity mark (`IDENTITY_MARKS`, dark, at the shape's centre): the
same name always shows the same mark, whatever its type, as a person always shows the same face. Candidates tied
to no phrase leave nothing else to tell which of two shapes is which entity's in "{A} vs {B}" (the types of A
and B, hence their shapes, are drawn independently of the names): without the mark an oracle could only guess
(`oracle_right`). The mark is learnt from the names' co-occurrence with it; it is not the name's text.

Everything follows from `seed`: the same arguments give byte-identical files.
"""
import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw
from tango.common.exceptions import ConfigurationError

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
DEFAULT_NUM_TWEETS: Mapping[str, int] = {"train": 300, "valid": 60, "test": 60}
SIDECAR_NAME = "groundings.jsonl"
PROPOSALS_NAME = "proposals.jsonl"
ENTITY_BOXES_FOLDER = "xml"
# Proposals' corners move by up to this fraction of the box's side: IoU with the drawn box stays >= 0.5.
PROPOSAL_JITTER = 0.1
IMAGE_FOLDER = "images"
MIN_IMAGE_SIDE = 32

Colour = tuple[int, int, int]
BoxInt = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1 and y1 exclusive


@dataclass(frozen=True)
class Look:
    """How a region is drawn: a shape name and its base colour (jittered per region)."""

    shape: str
    colour: Colour


# One clearly distinct colour AND shape per entity type. The centre pixel ((x0 + x1) // 2, (y0 + y1) // 2) of an
# entity region's box always lies inside the filled shape.
VISUAL_VOCABULARY: Mapping[str, Look] = {
    "PER": Look("circle", (220, 40, 40)),
    "LOC": Look("triangle", (40, 170, 60)),
    "ORG": Look("square", (40, 80, 220)),
    "MISC": Look("cross", (235, 200, 30)),
}
# Looks of no type: distractor regions, which belong to no entity.
DISTRACTOR_LOOKS: tuple[Look, ...] = (
    Look("hexagon_outline", (150, 60, 170)),
    Look("diamond", (120, 120, 120)),
)
COLOUR_JITTER = 18
# Identity marks (grounded entities only), drawn dark inside an entity's shape: name number i of the invented
# pool (`InventedWords.names`) shows mark i % len(IDENTITY_MARKS). Two names of one tweet share a mark for about
# one pair in eight; an oracle cannot tell those apart either (`oracle_right`).
IDENTITY_MARKS = ("dot", "ring", "bar", "pillar", "slash", "backslash", "x", "two_dots")
MARK_COLOUR: Colour = (25, 25, 25)

# Entities per tweet: ~15% none, ~45% one, ~40% two or three (of different types).
ENTITY_COUNT_WEIGHTS = ((0, 0.15), (1, 0.45), (2, 0.28), (3, 0.12))
CUE_TEMPLATE_RATE = 0.3  # of the tweets with entities
# Tweets without a usable image can only be typed from textual cues (about 45% F1 for the text-only model), so
# their share bounds every model's overall F1: at 2% + 2% a model perfect on the rest can reach about 98, at
# 5% + 5% only about 94.5 (README, "Synthetic tweets: only the image decides the type").
MISSING_IMAGE_RATE = 0.02
BLANK_IMAGE_RATE = 0.02

# Templates: whitespace-separated tokens. "{A}", "{B}", "{C}" are entities whose type only the image tells;
# "{PER}", "{LOC}", "{ORG}", "{MISC}" are entities of that type, which the surrounding words hint at.
# "[the show]" marks a non-entity noun phrase that may be grounded to a distractor region.
NO_ENTITY_TEMPLATES = (
    "what a day today",
    "cannot wait for [the weekend]",
    "this is so good",
    "good morning everyone",
    "who is watching [the game] tonight ?",
    "best [coffee] ever",
    "so tired after [the long trip]",
    "that was [the best concert] of my life",
    "can someone explain [this photo] ?",
    "rainy days like this",
)
NEUTRAL_TEMPLATES: Mapping[int, tuple[str, ...]] = {
    1: (
        "{A} was amazing today",
        "so proud of {A} right now",
        "{A} is trending again",
        "look at {A} ! [the crowd] is huge",
        "throwback to {A} last summer",
        "everyone is talking about {A}",
        "{A} never disappoints",
        "just saw {A} at [the show]",
        "{A} , what a night",
        "big news about {A} this morning",
        "what a week for {A}",
        "still thinking about {A} and [the photos]",
    ),
    2: (
        "met {A} and {B} at [the show]",
        "{A} vs {B} tonight !",
        "{A} and {B} , name a better duo",
        "from {A} to {B} , what a ride",
        "{A} meets {B} in [the final]",
        "nothing beats {A} after {B}",
        "{A} or {B} ? vote now",
        "watching {A} with {B} on [the big screen]",
    ),
    3: (
        "{A} , {B} and {C} all in [one photo]",
        "{A} , {B} , {C} : pick one",
        "shoutout to {A} , {B} and {C} for [the support]",
        "{A} with {B} and {C} at [the event]",
    ),
}
CUE_TEMPLATES: Mapping[int, tuple[str, ...]] = {
    1: (
        "flying to {LOC} tomorrow",
        "greetings from sunny {LOC}",
        "{PER} said that it was worth it",
        "happy birthday {PER} !",
        "interview with {PER} tonight",
        "{ORG} announced [a new deal] today",
        "breaking : {ORG} signs [a big contract]",
        "the new {MISC} trailer is out",
        "who else is playing {MISC} this weekend ?",
    ),
    2: (
        "{PER} joins {ORG} next season",
        "{PER} arrives in {LOC}",
        "{ORG} opens an office in {LOC}",
        "{PER} stars in the {MISC} sequel",
        "{PER} was spotted with {A}",
        "flying to {LOC} to see {A}",
        "{ORG} announced [a deal] with {A}",
    ),
    3: (
        "{PER} of {ORG} visits {LOC}",
        "{ORG} brings the {MISC} tour to {LOC}",
        "{PER} talks {MISC} with {A}",
    ),
}

CONSONANTS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
VOWELS = ("a", "e", "i", "o", "u")
FINAL_CONSONANTS = ("n", "r", "l", "s", "k")
# Real words (and well-known names) that consonant-vowel syllables can spell: no invented word may be one of them.
REAL_WORDS = frozenset(
    """
    banana potato tomato salami safari kimono karate sonata domino bikini pajama lasagne tobago panama
    data sofa soda lava tuna mama papa gala lima coma pizza memo solo logo tempo radio video piano
    make take name game home time life love made more sure same fine line mine note vote pole role rule
    tube cute site size rate late date gate fate bike like ride side tide hope rope pope nose rose pose lose
    bone tone zone gone done none safe sale tale male pale file mile pile tile vile mole sole tune dune fuse
    muse mute fume dome kite mate note base case vase lame tame fame came dare bare care rare mare fare
    lake bake fake sake wake poke joke woke bite mite dine dive five live give move rove love dove
    pure lure cure dune bale kale gale nine pine vine wine tire fire hire dire sire bore core fore gore pore
    sore tore lobe robe tube rude dude nude lure sure
    salon lemon melon robin satin basin cabin denim venus bonus minus tumor motor rotor sugar solar polar
    lunar vapor radar sonar timer tiger paper super rider later never fever lover mover baker maker taker
    poker biker rumor gamer sober moral total metal petal pedal medal fatal nasal vital rival final tidal
    local vocal vodka nun sun run fun gun bun pun tan man van pan ban fan ten pen den men tin pin sin fin
    bin kin din ton son
    tokyo kenya peru mali togo fiji rome paris dubai samoa malta nike sony toyota honda mazda suzuki lego
    yoga judo sumo tofu sushi kobe lima nepal benin gabon niger sudan lagos kabul minsk dakar rabat oslo
    bali java roma milano napoli torino sega nokia fila puma kia seat fiat lada tata
    """.split()
)


class DatasetExistsError(FileExistsError):
    """The output folder is not empty and `overwrite` was not given."""


@dataclass(frozen=True)
class Mention:
    """An entity mention: its words' inclusive span in the tweet and its type."""

    first: int
    last: int
    entity_type: str
    typed_by_text: bool = False  # from a cue template's typed slot ("{PER}"), not only the image


@dataclass
class SyntheticTweet:
    """One generated tweet before it is written."""

    image_id: str
    words: list[str]
    tags: list[str]
    mentions: list[Mention]
    phrases: list[tuple[int, int]]  # non-entity noun phrases and hashtags that may be grounded to distractors
    cue: bool
    image: str = "image"  # "image", "blank" or "missing"
    regions: list[dict[str, Any]] = field(default_factory=list)
    entity_boxes: list[tuple[Mention, BoxInt]] = field(default_factory=list)  # each mention's drawn box
    drawn_boxes: list[BoxInt] = field(default_factory=list)  # every shape drawn, entity or distractor


# ---------------------------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------------------------


def _template_words() -> set[str]:
    templates = list(NO_ENTITY_TEMPLATES)
    for table in (NEUTRAL_TEMPLATES, CUE_TEMPLATES):
        for group in table.values():
            templates.extend(group)
    return {word.strip("[]").lower() for template in templates for word in template.split()}


_FORBIDDEN_WORDS = REAL_WORDS | _template_words() | {"rt"}


def invented_word(rng: random.Random, syllables: Sequence[int] = (2, 3)) -> str:
    """A lower-case word of 2 or 3 consonant-vowel syllables, sometimes with a final consonant; never a real word."""
    while True:
        count = rng.choice(list(syllables))
        word = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(count))
        if rng.random() < 0.3:
            word += rng.choice(FINAL_CONSONANTS)
        if word not in _FORBIDDEN_WORDS:
            return word


@dataclass(frozen=True)
class InventedWords:
    """
    The invented words one dataset uses: entity names (1 or 2 words), hashtag words and user names.
    Not a label `Vocabulary` (`fmit_plugin.data.vocabulary`), hence the name.
    """

    names: tuple[tuple[str, ...], ...]
    hashtags: tuple[str, ...]
    users: tuple[str, ...]


def make_invented_words(
    rng: random.Random, single_names: int = 60, double_names: int = 20, hashtags: int = 30, users: int = 30
) -> InventedWords:
    """Distinct invented words: capitalised names (shared by all types and splits), lower-case hashtags and users."""
    used: set[str] = set()

    def fresh() -> str:
        while True:
            word = invented_word(rng)
            if word not in used:
                used.add(word)
                return word

    names: list[tuple[str, ...]] = [(fresh().capitalize(),) for _ in range(single_names)]
    names += [(fresh().capitalize(), fresh().capitalize()) for _ in range(double_names)]
    hashtag_words = tuple(fresh() for _ in range(hashtags))
    user_names = tuple(fresh() + (f"_{rng.randint(1, 99)}" if rng.random() < 0.4 else "") for _ in range(users))
    return InventedWords(tuple(names), hashtag_words, user_names)


EMOJI = ("😀", "🔥", "😂", "❤️", "👏", "🙌", "😍", "💯")


def _url(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "http://t.co/" + "".join(rng.choice(alphabet) for _ in range(10))


def _entity_count(rng: random.Random) -> int:
    draw = rng.random()
    for count, weight in ENTITY_COUNT_WEIGHTS:
        if draw < weight:
            return count
        draw -= weight
    return ENTITY_COUNT_WEIGHTS[-1][0]


def make_tweet(rng: random.Random, invented: InventedWords, image_id: str) -> SyntheticTweet:
    """One tweet: a template filled with names of different types, plus the usual tweet noise (all labelled O)."""
    count = _entity_count(rng)
    cue = count > 0 and rng.random() < CUE_TEMPLATE_RATE
    if count == 0:
        template = rng.choice(NO_ENTITY_TEMPLATES)
    else:
        template = rng.choice((CUE_TEMPLATES if cue else NEUTRAL_TEMPLATES)[count])
    slots = template.split()
    fixed_types = {slot[1:-1] for slot in slots if slot[1:-1] in ENTITY_TYPES}
    free_types = [entity_type for entity_type in ENTITY_TYPES if entity_type not in fixed_types]
    rng.shuffle(free_types)
    names = rng.sample(invented.names, count)

    words: list[str] = []
    tags: list[str] = []
    mentions: list[Mention] = []
    phrases: list[tuple[int, int]] = []

    def add(word: str, tag: str = "O") -> None:
        words.append(word)
        tags.append(tag)

    # Tweet noise before the body.
    if rng.random() < 0.15:
        for word in ("RT", "@" + rng.choice(invented.users), ":"):
            add(word)
    elif rng.random() < 0.15:
        add("@" + rng.choice(invented.users))

    phrase_start: Optional[int] = None
    for slot in slots:
        if slot.startswith("{") and slot.endswith("}"):
            key = slot[1:-1]
            entity_type = key if key in ENTITY_TYPES else free_types.pop()
            name = names[len(mentions)]
            first = len(words)
            for position, part in enumerate(name):
                add(part, ("B-" if position == 0 else "I-") + entity_type)
            mentions.append(Mention(first, len(words) - 1, entity_type, typed_by_text=key in ENTITY_TYPES))
            continue
        if slot.startswith("["):
            phrase_start = len(words)
        add(slot.strip("[]"))
        if slot.endswith("]") and phrase_start is not None:
            phrases.append((phrase_start, len(words) - 1))
            phrase_start = None

    # Tweet noise after the body.
    if rng.random() < 0.25:
        add(rng.choice(EMOJI))
    if rng.random() < 0.35:
        for hashtag in rng.sample(invented.hashtags, rng.randint(1, 2)):
            add("#" + hashtag)
            phrases.append((len(words) - 1, len(words) - 1))
    if rng.random() < 0.25:
        add(_url(rng))
    return SyntheticTweet(image_id, words, tags, mentions, phrases, cue)


# ---------------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------------


def _jitter(rng: random.Random, colour: Colour, amount: int = COLOUR_JITTER) -> Colour:
    """`colour` moved by up to `amount` per channel; a grey stays grey (one shift for all channels)."""
    if colour[0] == colour[1] == colour[2]:
        shift = rng.randint(-amount, amount)
        shifts = (shift, shift, shift)
    else:
        shifts = (rng.randint(-amount, amount), rng.randint(-amount, amount), rng.randint(-amount, amount))
    r, g, b = (min(255, max(0, channel + delta)) for channel, delta in zip(colour, shifts))
    return (r, g, b)


def _overlaps(box: BoxInt, others: Sequence[BoxInt], gap: int) -> bool:
    return any(
        box[0] < other[2] + gap and other[0] < box[2] + gap and box[1] < other[3] + gap and other[1] < box[3] + gap
        for other in others
    )


def _place(rng: random.Random, width: int, height: int, taken: Sequence[BoxInt], gap: int = 2) -> Optional[BoxInt]:
    """A square box of random size and position that keeps `gap` pixels away from every box in `taken`."""
    side = min(width, height)
    low = max(6, round(0.16 * side))
    high = max(low, round(0.3 * side))
    for attempt in range(300):
        # Shrink the largest allowed size as attempts fail, so crowded images still find room.
        top_size = max(low, high - (high - low) * attempt // 200)
        size = rng.randint(low, top_size)
        x0 = rng.randint(0, width - size)
        y0 = rng.randint(0, height - size)
        box = (x0, y0, x0 + size, y0 + size)
        if not _overlaps(box, taken, gap):
            return box
    # Crowded: the first free spot of the smallest size, scanning row by row.
    for y0 in range(0, height - low + 1):
        for x0 in range(0, width - low + 1):
            box = (x0, y0, x0 + low, y0 + low)
            if not _overlaps(box, taken, gap):
                return box
    return None


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: BoxInt, colour: Colour) -> None:
    """Draws `shape` filling `box` (x1, y1 exclusive)."""
    x0, y0, x1, y1 = box
    right, bottom = x1 - 1, y1 - 1
    size = x1 - x0
    if shape == "circle":
        draw.ellipse([x0, y0, right, bottom], fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0, bottom), (right, bottom), ((x0 + right) / 2, y0)], fill=colour)
    elif shape == "square":
        draw.rectangle([x0, y0, right, bottom], fill=colour)
    elif shape == "cross":
        thickness = max(2, size // 3)
        offset = (size - thickness) // 2
        draw.rectangle([x0 + offset, y0, x0 + offset + thickness - 1, bottom], fill=colour)
        draw.rectangle([x0, y0 + offset, right, y0 + offset + thickness - 1], fill=colour)
    elif shape == "hexagon_outline":
        cx, cy, radius = (x0 + right) / 2, (y0 + bottom) / 2, (size - 1) / 2 - 1  # the 2-pixel line stays inside
        points = [
            (cx + radius * float(np.cos(np.pi / 3 * k)), cy + radius * float(np.sin(np.pi / 3 * k))) for k in range(6)
        ]
        draw.line(points + [points[0]], fill=colour, width=2)
    elif shape == "diamond":
        cx, cy = (x0 + right) / 2, (y0 + bottom) / 2
        draw.polygon([(cx, y0), (right, cy), (cx, bottom), (x0, cy)], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_identity_mark(draw: ImageDraw.ImageDraw, mark: str, box: BoxInt) -> None:
    """Draws `mark` (one of `IDENTITY_MARKS`) around the centre of `box`, a third of its side across, so that
    it lies (but for a diagonal's ends on the cross or the triangle) on the entity's shape."""
    x0, y0, x1, y1 = box
    size = x1 - x0
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    r = max(2, size // 6)
    width = max(1, size // 12)
    if mark == "dot":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=MARK_COLOUR)
    elif mark == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=MARK_COLOUR, width=width)
    elif mark == "bar":
        draw.line([(cx - r, cy), (cx + r, cy)], fill=MARK_COLOUR, width=width + 1)
    elif mark == "pillar":
        draw.line([(cx, cy - r), (cx, cy + r)], fill=MARK_COLOUR, width=width + 1)
    elif mark == "slash":
        draw.line([(cx - r, cy + r), (cx + r, cy - r)], fill=MARK_COLOUR, width=width + 1)
    elif mark == "backslash":
        draw.line([(cx - r, cy - r), (cx + r, cy + r)], fill=MARK_COLOUR, width=width + 1)
    elif mark == "x":
        draw.line([(cx - r, cy + r), (cx + r, cy - r)], fill=MARK_COLOUR, width=width)
        draw.line([(cx - r, cy - r), (cx + r, cy + r)], fill=MARK_COLOUR, width=width)
    elif mark == "two_dots":
        dot = max(1, r // 2)
        for x in (cx - r + dot, cx + r - dot):
            draw.ellipse([x - dot, cy - dot, x + dot, cy + dot], fill=MARK_COLOUR)
    else:
        raise ValueError(f"unknown identity mark {mark!r}")


def _background(rng: random.Random, width: int, height: int) -> Image.Image:
    """A light, low-saturation background with pixel noise, faint grey lines and dots."""
    grey = rng.randint(200, 240)
    base = np.array([grey + rng.randint(-8, 8) for _ in range(3)], dtype=np.int16)
    noise_rng = np.random.default_rng(rng.getrandbits(63))
    pixels = base[None, None, :] + noise_rng.integers(-8, 9, size=(height, width, 3), dtype=np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 7)):
        shade = grey - rng.randint(20, 45)
        points = [(rng.randint(0, width - 1), rng.randint(0, height - 1)) for _ in range(2)]
        draw.line(points, fill=(shade, shade, shade + rng.randint(-5, 5)), width=1)
    for _ in range(rng.randint(10, 30)):
        shade = grey - rng.randint(15, 50)
        x, y, radius = rng.randint(0, width - 1), rng.randint(0, height - 1), rng.randint(0, 1)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(shade, shade, shade))
    return image


def draw_tweet_image(
    rng: random.Random, tweet: SyntheticTweet, image_size: tuple[int, int], marks: Optional[Mapping[str, str]] = None
) -> Image.Image:
    """The tweet's image; fills `tweet.regions` with the sidecar regions (entity mentions, then phrases). With
    `marks` (an entity name -> its identity mark), each entity's shape also carries its name's mark; the random
    draws are the same either way."""
    width, height = image_size
    if tweet.image == "blank":
        grey = rng.randint(200, 240)
        tweet.regions, tweet.entity_boxes, tweet.drawn_boxes = [], [], []
        return Image.new("RGB", image_size, (grey, grey, grey))
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    taken: list[BoxInt] = []
    regions: list[dict[str, Any]] = []
    for mention in tweet.mentions:
        box = _place(rng, width, height, taken)
        if box is None:
            raise RuntimeError(f"no room for an entity region in a {width}x{height} image")
        taken.append(box)
        look = VISUAL_VOCABULARY[mention.entity_type]
        draw_shape(draw, look.shape, box, _jitter(rng, look.colour))
        if marks is not None:
            draw_identity_mark(draw, marks[" ".join(tweet.words[mention.first : mention.last + 1])], box)
        regions.append(_region(tweet.words, (mention.first, mention.last), box))
        tweet.entity_boxes.append((mention, box))
    phrases = list(tweet.phrases)
    rng.shuffle(phrases)
    for index in range(rng.randint(0, 2)):
        box = _place(rng, width, height, taken)
        if box is None:
            break
        taken.append(box)
        look = rng.choice(DISTRACTOR_LOOKS)
        draw_shape(draw, look.shape, box, _jitter(rng, look.colour))
        # Distractors beyond the tweet's phrases stay pure clutter.
        if index < len(phrases):
            regions.append(_region(tweet.words, phrases[index], box))
    tweet.regions = regions
    tweet.drawn_boxes = taken
    return image


def voc_annotation(tweet: SyntheticTweet, image_size: tuple[int, int]) -> str:
    """The Pascal VOC xml of a tweet's entity boxes, as Twitter-GMNER writes them (name = the entity's words)."""
    width, height = image_size
    objects = "".join(
        f"\t<object>\n\t\t<name>{escape(' '.join(tweet.words[mention.first : mention.last + 1]))}</name>\n"
        f"\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n\t\t\t<xmax>{x1}</xmax>\n"
        f"\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for mention, (x0, y0, x1, y1) in tweet.entity_boxes
    )
    return (
        f"<annotation>\n\t<filename>{tweet.image_id}.png</filename>\n\t<size>\n\t\t<width>{width}</width>\n"
        f"\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n{objects}</annotation>\n"
    )


def proposals(rng: random.Random, tweet: SyntheticTweet, image_size: tuple[int, int]) -> list[list[int]]:
    """Every drawn box, each corner moved by up to `PROPOSAL_JITTER` of its side (kept inside the image), shuffled."""
    width, height = image_size
    boxes = []
    for x0, y0, x1, y1 in tweet.drawn_boxes:
        # Floored: IoU with the drawn box stays >= 0.64 (a box shrunk or grown by 10 % at both corners).
        dx, dy = int(PROPOSAL_JITTER * (x1 - x0)), int(PROPOSAL_JITTER * (y1 - y0))
        nx0, ny0 = max(0, x0 + rng.randint(-dx, dx)), max(0, y0 + rng.randint(-dy, dy))
        nx1, ny1 = min(width, x1 + rng.randint(-dx, dx)), min(height, y1 + rng.randint(-dy, dy))
        boxes.append([nx0, ny0, max(nx1, nx0 + 1), max(ny1, ny0 + 1)])
    rng.shuffle(boxes)
    return boxes


def _region(words: Sequence[str], span: tuple[int, int], box: BoxInt) -> dict[str, Any]:
    return {
        "phrase": " ".join(words[span[0] : span[1] + 1]),
        "span": [span[0], span[1]],
        "box": list(box),
        "score": 1.0,
    }


# ---------------------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------------------


def _check_arguments(
    num_tweets: Mapping[str, int], image_size: Sequence[int], missing_image_rate: float, blank_image_rate: float
) -> None:
    for split, count in num_tweets.items():
        if not split or not all(char.isalnum() or char in "_-" for char in split):
            raise ConfigurationError(f"split names must be letters, digits, '_' or '-', got {split!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ConfigurationError(f"num_tweets[{split!r}] must be a non-negative integer, got {count!r}")
    if len(image_size) != 2 or min(image_size) < MIN_IMAGE_SIDE:
        raise ConfigurationError(
            f"image_size must be (width, height), each at least {MIN_IMAGE_SIDE}, got {image_size!r}"
        )
    for name, rate in (("missing_image_rate", missing_image_rate), ("blank_image_rate", blank_image_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ConfigurationError(f"{name} must be in [0, 1], got {rate}")
    if missing_image_rate + blank_image_rate > 1.0:
        raise ConfigurationError("missing_image_rate + blank_image_rate must be at most 1")


def _split_tweets(
    split: str, count: int, seed: int, invented: InventedWords, missing_rate: float, blank_rate: float
) -> tuple[list[SyntheticTweet], random.Random]:
    # Each split has its own stream, so changing one split's size leaves the others as they were.
    rng = random.Random(f"fmit-synthetic/{seed}/{split}")
    tweets = [make_tweet(rng, invented, f"syn_{split}_{index:05d}") for index in range(count)]
    missing = round(missing_rate * count)
    blank = min(round(blank_rate * count), count - missing)
    chosen = rng.sample(range(count), missing + blank)
    for index in chosen[:missing]:
        tweets[index].image = "missing"
    for index in chosen[missing:]:
        tweets[index].image = "blank"
    return tweets, rng


def invented_words(seed: int) -> InventedWords:
    """The invented words of the dataset generated with `seed`."""
    # The seed string keeps its old "vocabulary" suffix: changing it would change every generated dataset.
    return make_invented_words(random.Random(f"fmit-synthetic/{seed}/vocabulary"))


def identity_marks(invented: InventedWords) -> dict[str, str]:
    """Each entity name (words joined by spaces) -> the identity mark its shapes carry (`IDENTITY_MARKS`)."""
    return {" ".join(name): IDENTITY_MARKS[index % len(IDENTITY_MARKS)] for index, name in enumerate(invented.names)}


def oracle_right(tweet: SyntheticTweet, marks: Optional[Mapping[str, str]]) -> float:
    """
    How many of the tweet's entities an oracle gets right (type and box, grounded MNER with candidates tied to
    no phrase) on average, reading the text, the image and, when drawn (`marks`), the identity marks perfectly.

    An entity typed by its template's words is right (its box is the one shape of its type). With an image, the
    other entities that no mark tells apart are interchangeable: k of them show k shapes whose order nothing gives,
    so any assignment gets 1 of the k right on average (the mean number of fixed points of a random
    permutation). Without an image (missing or blank: nothing to ground) each such entity is one of the types
    the template leaves free, each equally likely.
    """
    free = [mention for mention in tweet.mentions if not mention.typed_by_text]
    right = float(len(tweet.mentions) - len(free))
    if not free:
        return right
    if tweet.image != "image":
        return right + len(free) / (len(ENTITY_TYPES) - len(tweet.mentions) + len(free))
    if marks is None:
        return right + 1.0
    return right + len({marks[" ".join(tweet.words[m.first : m.last + 1])] for m in free})


def _split_summary(tweets: Sequence[SyntheticTweet], marks: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    entities = Counter(mention.entity_type for tweet in tweets for mention in tweet.mentions)
    types_by_name: dict[str, set[str]] = {}
    for tweet in tweets:
        for mention in tweet.mentions:
            name = " ".join(tweet.words[mention.first : mention.last + 1])
            types_by_name.setdefault(name, set()).add(mention.entity_type)
    summary: dict[str, Any] = {
        "tweets": len(tweets),
        "entities": {entity_type: entities[entity_type] for entity_type in ENTITY_TYPES},
        "no_entity_tweets": sum(1 for tweet in tweets if not tweet.mentions),
        "single_entity_tweets": sum(1 for tweet in tweets if len(tweet.mentions) == 1),
        "multi_entity_tweets": sum(1 for tweet in tweets if len(tweet.mentions) > 1),
        "two_word_mentions": sum(1 for tweet in tweets for mention in tweet.mentions if mention.last > mention.first),
        "cue_template_tweets": sum(1 for tweet in tweets if tweet.cue),
        "names_with_several_types": sum(1 for types in types_by_name.values() if len(types) > 1),
        "missing_images": sum(1 for tweet in tweets if tweet.image == "missing"),
        "blank_images": sum(1 for tweet in tweets if tweet.image == "blank"),
        "grounded_regions": sum(len(tweet.regions) for tweet in tweets),
    }
    if marks is not None:
        shown = [tweet for tweet in tweets if tweet.image == "image"]
        summary.update(
            oracle_right=round(sum(oracle_right(tweet, marks) for tweet in tweets), 3),
            entities_with_image=sum(len(tweet.mentions) for tweet in shown),
            oracle_right_with_image=round(sum(oracle_right(tweet, marks) for tweet in shown), 3),
            oracle_right_with_image_without_marks=round(sum(oracle_right(tweet, None) for tweet in shown), 3),
        )
    return summary


def _write_split(path: Path, tweets: Sequence[SyntheticTweet]) -> None:
    lines: list[str] = []
    for tweet in tweets:
        lines.append(f"IMGID:{tweet.image_id}")
        lines.extend(f"{word}\t{tag}" for word, tag in zip(tweet.words, tweet.tags))
        lines.append("")
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8") if lines else b"")


def _is_non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def generate_dataset(
    output_dir: Union[str, os.PathLike],
    num_tweets: Optional[Mapping[str, int]] = None,
    seed: int = 0,
    image_size: tuple[int, int] = (96, 96),
    missing_image_rate: float = MISSING_IMAGE_RATE,
    blank_image_rate: float = BLANK_IMAGE_RATE,
    overwrite: bool = False,
    grounded_entities: bool = False,
) -> dict[str, Any]:
    """
    Writes a synthetic dataset to `output_dir` and returns its summary.

    # Parameters

    output_dir : `str` or path
        The folder to create. It must not exist or be empty, unless `overwrite`.
    num_tweets : `Mapping[str, int]`, optional (default = `{"train": 300, "valid": 60, "test": 60}`)
        Tweets per split; each split is written to `<split>.txt`.
    seed : `int`, optional (default = `0`)
        Everything is drawn from it: the same arguments give byte-identical files.
    image_size : `(int, int)`, optional (default = `(96, 96)`)
        Width and height of the images, each at least 32.
    missing_image_rate : `float`, optional (default = `0.02`)
        Fraction of each split's tweets (rounded) whose image file is not written.
    blank_image_rate : `float`, optional (default = `0.02`)
        Fraction of each split's tweets (rounded) whose image is uniform, with no regions.
    overwrite : `bool`, optional (default = `False`)
        Replace a non-empty `output_dir` (only once the new dataset is complete).
    grounded_entities : `bool`, optional (default = `False`)
        Also write each entity's box (`xml/<image_id>.xml`, Pascal VOC) and the candidates (`proposals.jsonl`),
        for grounded MNER, and draw each entity's identity mark in its shape. Tweets, groundings and every other
        pixel are the same with or without them.

    The dataset is written to a temporary sibling folder which is renamed to `output_dir` once complete, so an
    interrupted run leaves no partial dataset under `output_dir`.

    Returns a summary: per split (`splits`) and in all, the tweets, entity mentions per type, tweets with none,
    one and several entities, tweets from cue templates, names seen with several types, missing and blank images
    and grounded regions; and the files written. With `grounded_entities` each split's summary also has
    `oracle_right` (`oracle_right` summed), `entities_with_image` and `oracle_right_with_image` (the tweets
    with a non-blank image) and `oracle_right_with_image_without_marks` (what the oracle would get without them).
    """
    num_tweets = dict(DEFAULT_NUM_TWEETS if num_tweets is None else num_tweets)
    width, height = int(image_size[0]), int(image_size[1])
    _check_arguments(num_tweets, (width, height), missing_image_rate, blank_image_rate)
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise DatasetExistsError(f"{output} exists and is not a folder")
    if _is_non_empty_dir(output) and not overwrite:
        raise DatasetExistsError(f"{output} is not empty; pass overwrite=True (--overwrite) to replace it")

    invented = invented_words(seed)
    marks = identity_marks(invented)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        os.chmod(staging, 0o755)
        (staging / IMAGE_FOLDER).mkdir()
        splits: dict[str, dict[str, Any]] = {}
        sidecar: list[str] = []
        proposal_lines: list[str] = []
        if grounded_entities:
            (staging / ENTITY_BOXES_FOLDER).mkdir()
        files: list[str] = []
        images_written = 0
        for split, count in num_tweets.items():
            tweets, rng = _split_tweets(split, count, seed, invented, missing_image_rate, blank_image_rate)
            for tweet in tweets:
                if tweet.image == "missing":
                    continue
                image = draw_tweet_image(rng, tweet, (width, height), marks if grounded_entities else None)
                image.save(staging / IMAGE_FOLDER / f"{tweet.image_id}.png", format="PNG")
                images_written += 1
                sidecar.append(json.dumps({"image_id": tweet.image_id, "regions": tweet.regions}, ensure_ascii=False))
                if grounded_entities:
                    _write_grounding(staging, tweet, (width, height), seed, split, proposal_lines)
            _write_split(staging / f"{split}.txt", tweets)
            files.append(f"{split}.txt")
            splits[split] = _split_summary(tweets, marks if grounded_entities else None)
        (staging / SIDECAR_NAME).write_bytes(("\n".join(sidecar) + "\n" if sidecar else "").encode("utf-8"))
        files.append(SIDECAR_NAME)
        if grounded_entities:
            text = "\n".join(proposal_lines) + "\n" if proposal_lines else ""
            (staging / PROPOSALS_NAME).write_bytes(text.encode("utf-8"))
            files += [PROPOSALS_NAME, f"{ENTITY_BOXES_FOLDER}/"]
        _move_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    totals: dict[str, Any] = {
        key: sum(summary[key] for summary in splits.values())
        for key in (
            "tweets", "no_entity_tweets", "single_entity_tweets", "multi_entity_tweets", "two_word_mentions",
            "cue_template_tweets", "missing_images", "blank_images", "grounded_regions",
        )
    }
    totals["entities"] = {
        entity_type: sum(summary["entities"][entity_type] for summary in splits.values())
        for entity_type in ENTITY_TYPES
    }
    return {
        "output_dir": str(output.resolve()),
        "seed": seed,
        "image_size": [width, height],
        "splits": splits,
        **totals,
        "name_pool": len(invented.names),
        "files": files,
        "images_written": images_written,
        "image_folder": IMAGE_FOLDER,
    }


def _write_grounding(
    staging: Path, tweet: SyntheticTweet, image_size: tuple[int, int], seed: int, split: str, lines: list[str]
) -> None:
    """The tweet's xml (when it has entity boxes) and its proposals line. The jitter has its own random stream
    per image, so the tweets and the drawing are the same as without `grounded_entities`."""
    if tweet.entity_boxes:
        (staging / ENTITY_BOXES_FOLDER / f"{tweet.image_id}.xml").write_text(
            voc_annotation(tweet, image_size), encoding="utf-8"
        )
    rng = random.Random(f"fmit-synthetic/{seed}/{split}/proposals/{tweet.image_id}")
    lines.append(json.dumps({"image_id": tweet.image_id, "boxes": proposals(rng, tweet, image_size)}))


def _move_into_place(staging: Path, output: Path) -> None:
    """Renames the complete `staging` folder to `output`, replacing what is there (already allowed by the caller)."""
    old: Optional[Path] = None
    if output.exists():
        if _is_non_empty_dir(output):
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            old.rmdir()
            output.rename(old)
        else:
            output.rmdir()
    try:
        staging.rename(output)
    except BaseException:
        if old is not None and not output.exists():
            old.rename(output)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
