import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.synthetic import generator
from fmit_plugin.synthetic.__main__ import main
from fmit_plugin.synthetic.generator import (
    BLANK_IMAGE_RATE,
    MISSING_IMAGE_RATE,
    DatasetExistsError,
    generate_dataset,
)
from fmit_plugin.vision.grounders import PrecomputedGrounder

TYPES = ("PER", "LOC", "ORG", "MISC")
ALLOWED_TAGS = {"O"} | {f"{prefix}-{entity_type}" for prefix in "BI" for entity_type in TYPES}
SPLITS = ("train", "valid", "test")
SMALL = {"train": 30, "valid": 10, "test": 10}


def colour_type(pixel: tuple[int, int, int]) -> str | None:
    """The entity type whose colour `pixel` roughly has (red, green, blue, yellow), written independently of the
    generator's constants."""
    r, g, b = pixel[:3]
    if r > 170 and g > 150 and b < 100:
        return "MISC"  # yellow
    if r > 160 and g < 110 and b < 110:
        return "PER"  # red
    if g > 120 and r < 100 and b < 110:
        return "LOC"  # green
    if b > 160 and r < 100 and g < 130:
        return "ORG"  # blue
    return None


def digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def read_blocks(path: Path) -> list[tuple[str, list[str], list[str]]]:
    """(image id, words, tags) of every tweet, read with no help from the project's reader."""
    tweets = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        assert lines[0].startswith("IMGID:")
        pairs = [line.split("\t") for line in lines[1:]]
        assert all(len(pair) == 2 for pair in pairs)
        tweets.append((lines[0][len("IMGID:") :], [p[0] for p in pairs], [p[1] for p in pairs]))
    return tweets


def mentions(words: list[str], tags: list[str]) -> list[tuple[int, int, str, str]]:
    """(first, last, type, name) of every entity mention."""
    found = []
    for index, tag in enumerate(tags):
        if tag.startswith("B-"):
            last = index
            while last + 1 < len(tags) and tags[last + 1] == "I-" + tag[2:]:
                last += 1
            found.append((index, last, tag[2:], " ".join(words[index : last + 1])))
    return found


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("synthetic") / "data"
    summary = generate_dataset(folder, seed=0)
    return folder, summary


@pytest.fixture(scope="module")
def sidecar(dataset) -> dict[str, list[dict]]:
    folder, _ = dataset
    records = [json.loads(line) for line in (folder / "groundings.jsonl").read_text(encoding="utf-8").splitlines()]
    return {record["image_id"]: record["regions"] for record in records}


# ------------------------------------------------------------------ files and determinism


def test_writes_the_expected_files(dataset):
    folder, summary = dataset
    assert sorted(path.name for path in folder.iterdir()) == ["groundings.jsonl", "images", "test.txt", "train.txt",
                                                              "valid.txt"]
    assert summary["files"] == ["train.txt", "valid.txt", "test.txt", "groundings.jsonl"]
    assert summary["tweets"] == 420
    assert [summary["splits"][split]["tweets"] for split in SPLITS] == [300, 60, 60]
    images = sorted((folder / "images").iterdir())
    assert len(images) == summary["images_written"] == 420 - summary["missing_images"]
    assert all(path.suffix == ".png" for path in images)
    with Image.open(images[0]) as image:
        assert image.size == (96, 96) and image.mode == "RGB"
    # no staging folder left next to the dataset
    assert [path.name for path in folder.parent.iterdir()] == ["data"]


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    first = generate_dataset(tmp_path / "a", num_tweets=SMALL, seed=7, image_size=(64, 48))
    second = generate_dataset(tmp_path / "b", num_tweets=SMALL, seed=7, image_size=(64, 48))
    other = generate_dataset(tmp_path / "c", num_tweets=SMALL, seed=8, image_size=(64, 48))
    same_a, same_b, different = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    assert len(same_a) > 40
    assert same_a == same_b
    assert {key: value for key, value in first.items() if key != "output_dir"} == {
        key: value for key, value in second.items() if key != "output_dir"
    }
    for name in ("train.txt", "valid.txt", "test.txt", "groundings.jsonl"):
        assert same_a[name] != different[name]
    shared_images = set(same_a) & set(different)
    assert sum(same_a[name] != different[name] for name in shared_images) > 0.9 * len(shared_images)
    assert other["seed"] == 8
    with Image.open(tmp_path / "a" / "images" / "syn_train_00000.png") as image:
        assert image.size == (64, 48)


def test_a_split_does_not_depend_on_the_other_splits_sizes(tmp_path):
    generate_dataset(tmp_path / "a", num_tweets={"train": 20, "valid": 5, "test": 5}, seed=3)
    generate_dataset(tmp_path / "b", num_tweets={"train": 35, "valid": 5, "test": 5}, seed=3)
    for split in ("valid.txt", "test.txt"):
        assert (tmp_path / "a" / split).read_bytes() == (tmp_path / "b" / split).read_bytes()


# ------------------------------------------------------------------ the reader reads it


def test_reader_reads_every_split(dataset):
    folder, summary = dataset
    reader = TwitterMnerReader(image_dir=str(folder / "images"))
    image_ids: set[str] = set()
    for split in SPLITS:
        instances = reader.read(str(folder / f"{split}.txt"))
        stats = reader.last_statistics
        expected = summary["splits"][split]
        assert len(instances) == stats.tweets == expected["tweets"]
        assert (stats.malformed_lines, stats.skipped_tweets, stats.empty_tweets) == (0, 0, 0)
        assert stats.missing_images == expected["missing_images"]
        counts: Counter = Counter()
        multi = none = 0
        for instance in instances:
            assert instance.tags is not None and len(instance.tags) == len(instance.words)
            assert set(instance.tags) <= ALLOWED_TAGS
            for previous, tag in zip(["O", *instance.tags], instance.tags):
                if tag.startswith("I-"):
                    assert previous in (f"B-{tag[2:]}", tag)
            found = mentions(instance.words, instance.tags)
            counts.update(entity_type for _, _, entity_type, _ in found)
            multi += len(found) > 1
            none += not found
            assert instance.image_id is not None and instance.image_id not in image_ids
            image_ids.add(instance.image_id)
            assert (instance.image_path is None) == (not (folder / "images" / f"{instance.image_id}.png").exists())
        assert dict(counts) == {key: value for key, value in expected["entities"].items() if value}
        assert multi == expected["multi_entity_tweets"]
        assert none == expected["no_entity_tweets"]
    assert len(image_ids) == 420


def test_tweets_carry_tweet_noise_labelled_o(dataset):
    folder, _ = dataset
    tweets = read_blocks(folder / "train.txt")
    noise = {"rt": 0, "mention": 0, "hashtag": 0, "url": 0, "emoji": 0}
    for _, words, tags in tweets:
        for word, tag in zip(words, tags):
            kind = None
            if word == "RT":
                kind = "rt"
            elif word.startswith("@"):
                kind = "mention"
            elif word.startswith("#"):
                kind = "hashtag"
                assert word[1:].islower() and word[1:].isalpha()
            elif word.startswith("http://t.co/"):
                kind = "url"
            elif not word.isascii():
                kind = "emoji"
            if kind:
                noise[kind] += 1
                assert tag == "O", (word, tag)
        assert all(word and "\t" not in word and " " not in word for word in words)
    assert all(count >= 10 for count in noise.values()), noise


def test_entity_mix(dataset):
    _, summary = dataset
    train = summary["splits"]["train"]
    assert 0.05 <= train["no_entity_tweets"] / 300 <= 0.3
    assert 0.3 <= train["single_entity_tweets"] / 300 <= 0.6
    assert 0.25 <= train["multi_entity_tweets"] / 300 <= 0.55
    with_entities = 300 - train["no_entity_tweets"]
    assert 0.15 <= train["cue_template_tweets"] / with_entities <= 0.45
    assert train["two_word_mentions"] > 20
    assert all(train["entities"][entity_type] > 40 for entity_type in TYPES)


# ------------------------------------------------------------------ the sidecar


def test_precomputed_grounder_loads_the_sidecar(dataset, sidecar):
    folder, summary = dataset
    grounder = PrecomputedGrounder(str(folder / "groundings.jsonl"))
    image_stems = {path.stem for path in (folder / "images").iterdir()}
    assert set(grounder.regions) == set(sidecar) == image_stems
    total = 0
    for split in SPLITS:
        for image_id, words, _ in read_blocks(folder / f"{split}.txt"):
            if image_id not in image_stems:
                continue
            with Image.open(folder / "images" / f"{image_id}.png") as image:
                regions = grounder.ground(image, image_id, words, [])
            assert len(regions) == len(sidecar[image_id])
            total += len(regions)
    assert total == summary["grounded_regions"] > 500
    assert grounder.dropped_out_of_range == grounder.dropped_outside_image == 0


def test_every_region_points_at_its_words_and_shows_its_type(dataset, sidecar):
    folder, _ = dataset
    checked = {"entity": 0, "distractor": 0}
    for split in SPLITS:
        for image_id, words, tags in read_blocks(folder / f"{split}.txt"):
            if image_id not in sidecar:
                assert not (folder / "images" / f"{image_id}.png").exists()
                continue
            with Image.open(folder / "images" / f"{image_id}.png") as opened:
                image = opened.convert("RGB")
            width, height = image.size
            found = mentions(words, tags)
            regions = sidecar[image_id]
            if image.getextrema() == tuple((value[0], value[0]) for value in image.getextrema()):
                assert regions == []  # a blank image has no regions
                continue
            entity_spans = {(first, last): entity_type for first, last, entity_type, _ in found}
            grounded_entities = set()
            for region in regions:
                first, last = region["span"]
                assert 0 <= first <= last < len(words)
                assert region["phrase"] == " ".join(words[first : last + 1])
                x0, y0, x1, y1 = region["box"]
                assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
                assert region["score"] == 1.0
                centre = image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))
                if (first, last) in entity_spans:
                    grounded_entities.add((first, last))
                    assert colour_type(centre) == entity_spans[(first, last)], (image_id, region, centre)
                    checked["entity"] += 1
                else:
                    assert all(tag == "O" for tag in tags[first : last + 1])
                    assert colour_type(centre) is None, (image_id, region, centre)
                    checked["distractor"] += 1
            # one region per entity mention
            assert grounded_entities == set(entity_spans)
            assert len([r for r in regions if tuple(r["span"]) in entity_spans]) == len(entity_spans)
            # entity regions do not overlap any other region
            boxes = [region["box"] for region in regions]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1 :]:
                    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert checked["entity"] > 400 and checked["distractor"] > 50


def test_the_image_background_has_no_type_colour(dataset, sidecar):
    """Outside the regions the image shows no type's colour: only the regions carry visual evidence."""
    folder, _ = dataset
    for image_id in list(sidecar)[:40]:
        with Image.open(folder / "images" / f"{image_id}.png") as opened:
            image = opened.convert("RGB")
        inside = set()
        for region in sidecar[image_id]:
            x0, y0, x1, y1 = region["box"]
            inside.update((x, y) for x in range(x0, x1) for y in range(y0, y1))
        for y in range(0, image.height, 3):
            for x in range(0, image.width, 3):
                if (x, y) not in inside:
                    pixel = image.getpixel((x, y))
                    # ungrounded distractors (more distractors than phrases) are grey or purple, never a type colour
                    assert colour_type(pixel) is None, (image_id, x, y, pixel)


# ------------------------------------------------------------------ text alone cannot decide


def test_the_same_name_appears_with_different_types(dataset):
    folder, summary = dataset
    types_by_name: dict[str, set[str]] = {}
    for _, words, tags in read_blocks(folder / "train.txt"):
        found = mentions(words, tags)
        for _, _, entity_type, name in found:
            types_by_name.setdefault(name, set()).add(entity_type)
            assert name[0].isupper() and name.replace(" ", "").isalpha()
        if len(found) > 1:
            entity_types = [entity_type for _, _, entity_type, _ in found]
            assert len(set(entity_types)) == len(entity_types), (words, tags)
            assert len({name for *_, name in found}) == len(found)
    several = [name for name, types in types_by_name.items() if len(types) >= 2]
    assert len(several) >= 20
    assert len(several) == summary["splits"]["train"]["names_with_several_types"]
    assert any(len(types) == 4 for types in types_by_name.values())
    assert any(" " in name for name in several)  # two-word names too
    # names are invented: none of them is a real word the generator knows of, nor a template word
    for name in types_by_name:
        for word in name.lower().split():
            assert word not in generator.REAL_WORDS


def test_test_names_are_seen_in_train_with_other_types(dataset):
    folder, _ = dataset
    train_types: dict[str, set[str]] = {}
    for _, words, tags in read_blocks(folder / "train.txt"):
        for _, _, entity_type, name in mentions(words, tags):
            train_types.setdefault(name, set()).add(entity_type)
    test_mentions = [m for _, words, tags in read_blocks(folder / "test.txt") for m in mentions(words, tags)]
    seen = [m for m in test_mentions if m[3] in train_types]
    assert len(seen) > 0.8 * len(test_mentions)
    # memorising train types would mislabel many test mentions
    assert sum(m[2] not in train_types[m[3]] or len(train_types[m[3]]) > 1 for m in seen) > 0.5 * len(seen)


# ------------------------------------------------------------------ missing and blank images


def test_missing_and_blank_images_at_the_default_rates(dataset, sidecar):
    folder, summary = dataset
    train = read_blocks(folder / "train.txt")
    missing = [image_id for image_id, _, _ in train if not (folder / "images" / f"{image_id}.png").exists()]
    assert len(missing) == round(MISSING_IMAGE_RATE * len(train)) > 0
    assert len(missing) == summary["splits"]["train"]["missing_images"]
    assert not any(image_id in sidecar for image_id in missing)
    blank = []
    for image_id, _, _ in train:
        if image_id in missing:
            continue
        with Image.open(folder / "images" / f"{image_id}.png") as image:
            extrema = image.convert("RGB").getextrema()
        if all(low == high for low, high in extrema):
            blank.append(image_id)
            assert sidecar[image_id] == []
    assert len(blank) == round(BLANK_IMAGE_RATE * len(train)) > 0
    assert len(blank) == summary["splits"]["train"]["blank_images"]


def test_rates_are_configurable(tmp_path):
    summary = generate_dataset(tmp_path / "d", num_tweets={"train": 40}, missing_image_rate=0.5, blank_image_rate=0.25)
    assert summary["splits"]["train"]["missing_images"] == 20
    assert summary["splits"]["train"]["blank_images"] == 10
    assert len(list((tmp_path / "d" / "images").iterdir())) == 20
    assert summary["files"] == ["train.txt", "groundings.jsonl"]
    summary = generate_dataset(tmp_path / "e", num_tweets={"train": 20}, missing_image_rate=0, blank_image_rate=0)
    assert summary["missing_images"] == summary["blank_images"] == 0


@pytest.mark.parametrize(
    "arguments",
    [
        {"image_size": (16, 96)},
        {"missing_image_rate": 1.5},
        {"missing_image_rate": 0.6, "blank_image_rate": 0.6},
        {"num_tweets": {"train": -1}},
        {"num_tweets": {"../x": 3}},
    ],
)
def test_rejects_bad_arguments(tmp_path, arguments):
    with pytest.raises(ConfigurationError):
        generate_dataset(tmp_path / "bad", **arguments)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------ overwriting and interruptions


def test_refuses_to_overwrite_a_non_empty_folder(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(DatasetExistsError):
        generate_dataset(target, num_tweets=SMALL)
    assert [path.name for path in target.iterdir()] == ["keep.txt"]
    assert [path.name for path in tmp_path.iterdir()] == ["data"]
    summary = generate_dataset(target, num_tweets=SMALL, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert (target / "train.txt").is_file() and summary["tweets"] == 50
    assert [path.name for path in tmp_path.iterdir()] == ["data"]


def test_an_empty_folder_is_filled(tmp_path):
    (tmp_path / "data").mkdir()
    summary = generate_dataset(tmp_path / "data", num_tweets=SMALL)
    assert (tmp_path / "data" / "groundings.jsonl").is_file() and summary["tweets"] == 50


def test_an_interrupted_run_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = generator.draw_tweet_image
    monkeypatch.setattr(generator, "draw_tweet_image", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "data", num_tweets=SMALL)
    assert list(tmp_path.iterdir()) == []
    # an existing dataset survives a failed overwrite
    monkeypatch.setattr(generator, "draw_tweet_image", original)
    generate_dataset(tmp_path / "data", num_tweets=SMALL)
    before = digests(tmp_path / "data")
    calls.clear()
    monkeypatch.setattr(generator, "draw_tweet_image", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "data", num_tweets=SMALL, seed=5, overwrite=True)
    assert digests(tmp_path / "data") == before
    assert [path.name for path in tmp_path.iterdir()] == ["data"]


# ------------------------------------------------------------------ command line


def test_command_line(tmp_path, capsys):
    target = tmp_path / "cli"
    arguments = [str(target), "--train", "12", "--valid", "4", "--test", "4", "--seed", "2", "--image-size", "64", "64"]
    assert main(arguments) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [summary["splits"][split]["tweets"] for split in SPLITS] == [12, 4, 4]
    assert summary["seed"] == 2 and summary["image_size"] == [64, 64]
    assert main(arguments) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*arguments, "--overwrite"]) == 0


def test_command_line_reports_a_bad_value_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--missing-image-rate", "1.5"]) == 1
    assert capsys.readouterr().err == "error: missing_image_rate must be in [0, 1], got 1.5\n"
    assert not (tmp_path / "cli").exists()


def test_the_only_vocabulary_class_is_the_label_vocabulary():
    # The generator's word lists were a second `Vocabulary` (issue 14); they are `InventedWords` now.
    from fmit_plugin.data.vocabulary import Vocabulary

    assert not hasattr(generator, "Vocabulary")
    words = generator.make_invented_words(random.Random(0))
    assert isinstance(words, generator.InventedWords) and not isinstance(words, Vocabulary)
    assert len(words.names) == 80 and len(set(words.names)) == 80


# ------------------------------------------------------------------ grounded entities (grounded MNER)


def test_grounded_entities_write_voc_boxes_and_jittered_proposals(tmp_path):
    from fmit_plugin.data.twitter_gmner import TwitterGmnerReader
    from fmit_plugin.vision.regions import box_iou

    plain = tmp_path / "plain"
    grounded = tmp_path / "grounded"
    generate_dataset(plain, num_tweets=SMALL, seed=3, blank_image_rate=0.1, missing_image_rate=0.1)
    summary = generate_dataset(grounded, num_tweets=SMALL, seed=3, blank_image_rate=0.1, missing_image_rate=0.1,
                               grounded_entities=True)
    assert summary["files"][-2:] == ["proposals.jsonl", "xml/"]
    # The same tweets and groundings as without the option; images only differ by the identity marks.
    extra = {name: digest for name, digest in digests(grounded).items() if name not in digests(plain)}
    assert {name: digests(grounded)[name] for name in digests(plain) if not name.startswith("images/")} == \
        {name: digest for name, digest in digests(plain).items() if not name.startswith("images/")}
    assert all(name == "proposals.jsonl" or name.startswith("xml/") for name in extra)
    assert sorted((grounded / "images").iterdir()) != [] and \
        sorted(p.name for p in (grounded / "images").iterdir()) == sorted(p.name for p in (plain / "images").iterdir())

    regions = {json.loads(line)["image_id"]: json.loads(line)["regions"]
               for line in (grounded / "groundings.jsonl").read_text().splitlines()}
    candidates = {json.loads(line)["image_id"]: json.loads(line)["boxes"]
                  for line in (grounded / "proposals.jsonl").read_text().splitlines()}
    assert candidates.keys() == regions.keys()  # every written image, none of the missing ones
    reader = TwitterGmnerReader(entity_boxes_dir=str(grounded / "xml"))
    groundable = not_groundable = 0
    best_overlaps: list[float] = []
    for split in SPLITS:
        for instance in reader.read(str(grounded / f"{split}.txt")):
            drawn = {(r["span"][0], r["span"][1] + 1): tuple(float(v) for v in r["box"])
                     for r in regions.get(instance.image_id, [])}
            for span, boxes in instance.entity_boxes.items():
                if instance.image_id not in candidates or not candidates[instance.image_id]:
                    assert boxes == []  # missing or blank image: not in the image
                    not_groundable += 1
                    continue
                groundable += 1
                assert boxes == [drawn[span]]
                # Exactly one proposal overlaps the entity's box enough (regions never overlap).
                overlaps = [box_iou(tuple(c), boxes[0]) for c in candidates[instance.image_id]]
                assert sum(o >= 0.5 for o in overlaps) == 1
                best_overlaps.append(max(overlaps))
    assert groundable > 20 and not_groundable > 0
    assert min(best_overlaps) < 1.0  # jittered, not the drawn boxes themselves
    shown = [len(boxes) for image, boxes in candidates.items() if regions[image]]
    assert max(shown) > 1  # several candidates per image: entities and distractors


def dark_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> set[tuple[int, int]]:
    """Pixels of `box` (relative to its corner) darker than any type colour, background or distractor."""
    x0, y0, x1, y1 = box
    ys, xs = np.nonzero(np.asarray(image)[y0:y1, x0:x1, :3].max(axis=-1) < 80)
    return set(zip(xs.tolist(), ys.tolist()))


def test_grounded_entities_show_their_names_identity_mark_and_nothing_else_changes(tmp_path):
    from PIL import ImageDraw

    plain, grounded = tmp_path / "plain", tmp_path / "grounded"
    marks = generator.identity_marks(generator.invented_words(5))
    generate_dataset(plain, num_tweets=SMALL, seed=5)
    generate_dataset(grounded, num_tweets=SMALL, seed=5, grounded_entities=True)
    regions = {json.loads(line)["image_id"]: json.loads(line)["regions"]
               for line in (grounded / "groundings.jsonl").read_text().splitlines()}
    marks_by_name: dict[tuple[str, int], set[frozenset]] = {}
    checked = 0
    for split in SPLITS:
        for image_id, words, tags in read_blocks(grounded / f"{split}.txt"):
            if not (grounded / "images" / f"{image_id}.png").is_file():
                continue
            before = Image.open(plain / "images" / f"{image_id}.png").convert("RGB")
            after = Image.open(grounded / "images" / f"{image_id}.png").convert("RGB")
            boxes = {(r["span"][0], r["span"][1]): tuple(r["box"]) for r in regions[image_id]}
            entity_boxes = [boxes[first, last] for first, last, _, _ in mentions(words, tags) if (first, last) in boxes]
            # Every changed pixel lies in an entity's box, and is dark (the mark).
            before_pixels, after_pixels = np.asarray(before), np.asarray(after)
            changed = (before_pixels != after_pixels).any(axis=-1)  # (height, width)
            inside = np.zeros_like(changed)
            for x0, y0, x1, y1 in entity_boxes:
                inside[y0:y1, x0:x1] = True
            assert not (changed & ~inside).any()
            assert (after_pixels[changed].max(axis=-1) < 80).all()
            for first, last, _, name in mentions(words, tags):
                if (first, last) not in boxes:
                    continue
                box = boxes[first, last]
                assert dark_pixels(before, box) == set() and dark_pixels(after, box) != set()
                # ... and it is the mark `identity_marks` names for that name.
                alone = Image.new("RGB", after.size, (255, 255, 255))
                generator.draw_identity_mark(ImageDraw.Draw(alone), marks[name], box)
                assert dark_pixels(alone, box) == dark_pixels(after, box)
                # The same name in a box of the same size shows the same mark, whatever its type.
                marks_by_name.setdefault((name, box[2] - box[0]), set()).add(frozenset(dark_pixels(after, box)))
                checked += 1
    assert checked > 20
    assert all(len(patterns) == 1 for patterns in marks_by_name.values())


def test_identity_marks_differ_from_each_other():
    from PIL import ImageDraw

    for size in (15, 22, 29):
        patterns = set()
        for mark in generator.IDENTITY_MARKS:
            image = Image.new("RGB", (40, 40), (255, 255, 255))
            generator.draw_identity_mark(ImageDraw.Draw(image), mark, (5, 5, 5 + size, 5 + size))
            patterns.add(frozenset(dark_pixels(image, (0, 0, 40, 40))))
        assert len(patterns) == len(generator.IDENTITY_MARKS)
    with pytest.raises(ValueError, match="unknown identity mark"):
        generator.draw_identity_mark(ImageDraw.Draw(Image.new("RGB", (9, 9))), "star", (0, 0, 8, 8))


def _tweet(mentions_: list[tuple[str, bool]], image: str = "image") -> generator.SyntheticTweet:
    words = [f"N{index}" for index in range(len(mentions_))]
    found = [generator.Mention(index, index, kind, typed_by_text=cued) for index, (kind, cued) in enumerate(mentions_)]
    return generator.SyntheticTweet("x", words, ["B-" + kind for kind, _ in mentions_], found, [], False, image=image)


def test_oracle_right_counts_what_the_text_image_and_marks_decide():
    two = _tweet([("PER", False), ("LOC", False)])
    # Without marks two image-typed entities are interchangeable: one right on average; distinct marks: both.
    assert generator.oracle_right(two, None) == 1.0
    assert generator.oracle_right(two, {"N0": "dot", "N1": "ring"}) == 2.0
    assert generator.oracle_right(two, {"N0": "dot", "N1": "dot"}) == 1.0
    three = _tweet([("PER", True), ("LOC", False), ("ORG", False)])
    assert generator.oracle_right(three, None) == 2.0  # the cued one plus one of the two others
    # No image: a cued entity is right, an image-typed one is one of the 4 - 1 types the template leaves free.
    assert generator.oracle_right(_tweet([("PER", True), ("ORG", False)], image="blank"), None) == pytest.approx(
        1 + 1 / 3)
    assert generator.oracle_right(_tweet([("ORG", False)], image="missing"), {"N0": "x"}) == 0.25
    assert generator.oracle_right(_tweet([]), None) == 0.0


def test_grounded_summary_has_the_oracle_with_and_without_marks(tmp_path):
    summary = generate_dataset(tmp_path / "d", num_tweets={"train": 200}, seed=2, grounded_entities=True)
    train = summary["splits"]["train"]
    entities = sum(train["entities"].values())
    assert 0 < train["oracle_right"] <= entities
    assert train["oracle_right_with_image_without_marks"] < train["oracle_right_with_image"] <= \
        train["entities_with_image"] < entities
    assert "oracle_right" not in generate_dataset(tmp_path / "p", num_tweets={"train": 20}, seed=2)["splits"]["train"]
