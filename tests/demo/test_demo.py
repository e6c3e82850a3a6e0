"""The embedded demo set is exactly what the generator makes, and the demo's own helpers behave."""
import filecmp

from PIL import Image

from fmit_plugin.data.span_utils import bio_tags_to_spans
from fmit_plugin.demo import DEMO_DATA, DEMO_IMAGE_SIZE, DEMO_SEED, _examples, stack_pictures
from fmit_plugin.synthetic.generator import generate_dataset


def test_the_embedded_set_is_the_generator_output_for_its_seed(tmp_path):
    generate_dataset(tmp_path / "data", seed=DEMO_SEED, image_size=DEMO_IMAGE_SIZE)
    names = ["train.txt", "valid.txt", "test.txt", "groundings.jsonl"]
    match, mismatch, errors = filecmp.cmpfiles(DEMO_DATA, tmp_path / "data", names, shallow=False)
    assert (mismatch, errors) == ([], [])
    images = sorted(p.name for p in (tmp_path / "data" / "images").iterdir())
    assert images == sorted(p.name for p in (DEMO_DATA / "images").iterdir())
    _, mismatch, errors = filecmp.cmpfiles(DEMO_DATA / "images", tmp_path / "data" / "images", images, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_examples_are_test_tweets_with_an_image_and_several_entities():
    examples = _examples(DEMO_DATA / "test.txt", DEMO_DATA / "images", 4)
    assert len(examples) == 4
    gold = {}
    for block in (DEMO_DATA / "test.txt").read_text(encoding="utf-8").strip().split("\n\n"):
        lines = block.splitlines()
        gold[lines[0][len("IMGID:"):]] = [line.split("\t")[1] for line in lines[1:]]
    for example in examples:
        assert len(bio_tags_to_spans(gold[example["id"]])) >= 2
        assert Image.open(example["image"]).size == DEMO_IMAGE_SIZE


def test_stack_pictures_puts_them_one_above_the_other(tmp_path):
    paths = []
    for index, (size, colour) in enumerate([((30, 10), (255, 0, 0)), ((20, 15), (0, 0, 255))]):
        paths.append(tmp_path / f"{index}.png")
        Image.new("RGB", size, colour).save(paths[-1])
    sheet = stack_pictures(paths, tmp_path / "sheet.png")
    assert sheet is not None
    with Image.open(sheet) as picture:
        assert picture.size == (30, 25)
        assert picture.getpixel((5, 5)) == (255, 0, 0)
        assert picture.getpixel((5, 20)) == (0, 0, 255)
        assert picture.getpixel((25, 20)) == (255, 255, 255)
    assert stack_pictures([], tmp_path / "none.png") is None
