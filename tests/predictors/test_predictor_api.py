"""The Python API: `Predictor.from_path`, `predict` with every input kind, `predict_json` and
`predict_batch_json` giving what `allennlp predict` writes, given regions and their errors."""
import io
import json
import logging

import pytest
from PIL import Image

import fmit_plugin
from fmit_plugin import Predictor
from fmit_plugin.commands.predict import predict_file
from tests.bad_input_helpers import write_run
from tests.serve_helpers import demo_images, demo_sidecar, demo_tweet, write_visual_run

NAME = "syn_test_00000"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    images = demo_images(root / "images", [NAME])
    run = write_visual_run(root / "run", demo_sidecar(root / "groundings.jsonl", [NAME]), image_dir=images)
    return root, images, run, Predictor.from_path(run)


def test_the_package_root_exports_the_predictor():
    assert fmit_plugin.Predictor is Predictor and "Predictor" in fmit_plugin.__all__


def test_from_path_builds_the_models_predictor(setup):
    _, _, run, predictor = setup
    assert type(predictor).__name__ == "SentenceTaggerPredictor"
    assert predictor.model.device().type == "cpu" and not predictor.model.training
    other = Predictor.from_path(run, predictor_name="sentence_tagger", cuda_device=-1,
                                overrides={"dataset_reader.visual_objects.max_objects": 1})
    assert other.dataset_reader.visual_objects.max_objects == 1


def test_predict_sentence_and_tokens(setup):
    *_, predictor = setup
    by_sentence = predictor.predict(sentence="Obama visits Paris")
    by_tokens = predictor.predict(tokens=["Obama", "visits", "Paris"])
    assert by_sentence == by_tokens and by_tokens["tokens"] == ["Obama", "visits", "Paris"]
    assert set(by_tokens) == {"tokens", "tags", "entities", "objects"}  # objects: the whole (empty) image
    with pytest.raises(ValueError, match='"tokens".*"sentence"'):
        predictor.predict()


def test_predict_image_as_path_bytes_and_pil_image_agree(setup):
    _, images, _, predictor = setup
    tokens = demo_tweet(NAME)
    path = images / f"{NAME}.png"
    by_path = predictor.predict(tokens=tokens, image=str(path))
    by_pathlike = predictor.predict(tokens=tokens, image=path)
    by_bytes = predictor.predict(tokens=tokens, image=path.read_bytes(), image_id=NAME)
    with Image.open(path) as opened:
        by_pil = predictor.predict(tokens=tokens, image=opened.copy(), image_id=NAME)
    assert len(by_path["objects"]) > 1  # grounded from the archive's sidecar
    for other in (by_pathlike, by_bytes, by_pil):
        assert other["objects"] == by_path["objects"] and other["tags"] == by_path["tags"]
    assert by_path["image"] == by_pathlike["image"] == str(path)
    assert by_bytes["image"] == by_pil["image"] == NAME
    with pytest.raises(ValueError, match="image must be a path, bytes or a PIL.Image, got int"):
        predictor.predict(tokens=tokens, image=3)


def test_predict_an_image_id_looked_up_in_the_readers_image_dir(setup):
    _, images, _, predictor = setup
    answer = predictor.predict(tokens=demo_tweet(NAME), image=NAME)
    assert answer["image"] == str(images / f"{NAME}.png") and len(answer["objects"]) > 1


def test_given_regions_replace_the_grounders(setup):
    _, images, _, predictor = setup
    regions = [{"phrase": "Obama", "span": [0, 0], "box": [1, 1, 30, 30], "score": 0.5},
               {"phrase": "person", "span": None, "box": [10, 10, 200, 200]}]
    answer = predictor.predict(tokens=["Obama", "in", "Paris"], image=images / f"{NAME}.png", regions=regions)
    # The sidecar's regions for this image are replaced; boxes are clipped to the 64 x 64 image; best score first.
    assert answer["objects"][1:] == [{"label": "person", "box": [10.0, 10.0, 64.0, 64.0], "start": 0, "end": 3},
                                    {"label": "Obama", "box": [1.0, 1.0, 30.0, 30.0], "start": 0, "end": 1}]
    empty = predictor.predict(tokens=["Obama", "in", "Paris"], image=images / f"{NAME}.png", regions=[])
    assert [o["label"] for o in empty["objects"]] == ["whole image"] and "warnings" not in empty


@pytest.mark.parametrize(("regions", "match"), [
    ("box", r'"regions" must be a list of regions, got str'),
    ([{"span": [0, 0], "box": [0, 0, 5, 5]}], r'"regions"\[0\]: a region has no \'phrase\''),
    ([{"phrase": "a", "span": [0, 0], "box": [0, 0, 5, 5]}, {"phrase": "b", "span": [0, 0], "box": [5, 5, 1, 1]}],
     r'"regions"\[1\]: \'box\' \[5, 5, 1, 1\] has x1 <= x0'),
    ([{"phrase": "a", "span": [0, 7], "box": [0, 0, 5, 5]}], r'"regions"\[0\]: \'span\' \[0, 7\] is outside'),
    ([{"phrase": "a", "span": [0, 0], "box": [0, 0, 5, 5], "score": "high"}], r"'score' must be a number"),
])
def test_bad_regions_name_the_region_and_field(setup, regions, match):
    *_, predictor = setup
    with pytest.raises(ValueError, match=match):
        predictor.predict_json({"tokens": ["Obama", "in", "Paris"], "regions": regions})


def test_predict_json_and_batch_are_what_predict_writes(setup, tmp_path, caplog):
    _, images, run, predictor = setup
    inputs = [{"id": 1, "tokens": demo_tweet(NAME), "image": NAME},
              {"id": 2, "sentence": "Obama in Paris", "image": str(images / f"{NAME}.png"),
               "regions": [{"phrase": "Obama", "span": [0, 0], "box": [2, 2, 20, 20]}]},
              {"id": 3, "sentence": "no image here"},
              {"id": 4, "sentence": "regions wrong", "regions": [{"phrase": "x"}]}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in inputs), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    predict_file(run, str(source), str(out), silent=True)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert lines[3] == {"line": 4, "id": 4, "error": "\"regions\"[0]: a region has no 'span'"}
    assert predictor.predict_batch_json(inputs[:3]) == lines[:3]
    assert [predictor.predict_json(item) for item in inputs[:3]] == lines[:3]


def test_an_image_without_regions_is_a_warning_and_counted_in_the_log(setup, tmp_path, caplog):
    _, images, run, _ = setup
    blank = io.BytesIO()
    Image.new("RGB", (30, 30), (0, 200, 0)).save(blank, format="PNG")
    (images / "unknown.png").write_bytes(blank.getvalue())
    source = tmp_path / "in.jsonl"
    lines = [{"tokens": ["a", "b"], "image": "unknown"}, {"tokens": ["c"], "image": "unknown"},
             {"tokens": demo_tweet(NAME), "image": NAME}]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with caplog.at_level(logging.WARNING):
        predict_file(run, str(source), str(out), silent=True)
    answers = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(any("no regions for image unknown" in w for w in a["warnings"]) for a in answers[:2])
    assert "warnings" not in answers[2]
    assert "2 inputs had an image but no regions" in caplog.text


def test_regions_for_a_model_without_visual_objects_are_ignored_with_a_warning(tmp_path):
    predictor = Predictor.from_path(write_run(tmp_path / "run", {"type": "test_hashing"}))
    answer = predictor.predict(tokens=["Obama"], regions=[{"phrase": "Obama", "span": [0, 0], "box": [0, 0, 4, 4]}])
    assert answer["warnings"] == ['"regions" ignored: this model uses no visual objects']
