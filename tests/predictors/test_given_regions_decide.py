"""Given regions change the prediction where they should: a tiny FMIT trained on synthetic tweets whose
entity types only their image regions tell (fmit_plugin/synthetic), then asked about test tweets with
their own regions, and with each entity's box moved onto a shape of another type."""
import json

import pytest
from tango.common import Params

from fmit_plugin import Predictor
from fmit_plugin.commands.train import train_model
from fmit_plugin.synthetic.generator import generate_dataset
from tests.conftest import write_tiny_bert
from tests.serve_helpers import visual_reader

ENCODER = {"type": "flat_lattice_transformer", "input_dim": 32, "num_layers": 1, "num_attention_heads": 4,
           "feedforward_hidden_dim": 64, "dropout_prob": 0.0, "max_distance": 64}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("regions_decide")
    data = root / "data"
    generate_dataset(data, num_tweets={"train": 200, "valid": 30, "test": 40}, seed=11, image_size=(48, 48),
                     missing_image_rate=0.0, blank_image_rate=0.0)
    texts = [line.split("\t")[0] for name in ("train.txt", "valid.txt", "test.txt")
             for line in (data / name).read_text(encoding="utf-8").splitlines() if "\t" in line]
    bert = write_tiny_bert(root / "bert", texts, hidden_size=32)
    # The sidecar grounds training; the model is then asked with regions given per input.
    config = {
        "dataset_reader": visual_reader(data / "groundings.jsonl", data / "images"),
        "train_data_path": str(data / "train.txt"),
        "validation_data_path": str(data / "valid.txt"),
        "model": {"type": "fmit", "text_field_embedder": {"type": "pretrained_transformer_mismatched",
                                                          "model_name": str(bert)},
                  "encoder": ENCODER, "visual_dim": 3, "dropout": 0.0},
        "data_loader": {"batch_size": 8},
        "trainer": {"optimizer": {"type": "adam", "lr": 3e-3,
                                  "parameter_groups": [[["^text_field_embedder\\."], {"lr": 1e-3}]]},
                    "num_epochs": 12, "seed": 3},
    }
    train_model(Params(config), root / "run")
    sidecar = {json.loads(line)["image_id"]: json.loads(line)["regions"]
               for line in (data / "groundings.jsonl").read_text(encoding="utf-8").splitlines()}
    tweets = []
    for block in (data / "test.txt").read_text(encoding="utf-8").strip().split("\n\n"):
        lines = block.splitlines()
        image_id = lines[0][len("IMGID:"):]
        rows = [line.split("\t") for line in lines[1:]]
        tweets.append((image_id, [r[0] for r in rows], [r[1] for r in rows]))
    return root, data, sidecar, tweets


def _types_by_span(answer):
    return {(e["start"], e["end"] - 1): e["type"] for e in answer["entities"]}


def test_given_regions_decide_the_type(trained, caplog):
    root, data, sidecar, tweets = trained
    predictor = Predictor.from_path(root / "run")
    followed_own = followed_moved = asked = 0
    for image_id, tokens, tags in tweets:
        image = (data / "images" / f"{image_id}.png").read_bytes()
        regions = [r for r in sidecar.get(image_id, []) if r["span"] is not None]
        gold = {tuple(r["span"]): tags[r["span"][0]][2:] for r in regions if tags[r["span"][0]] != "O"}
        entity_regions = [r for r in regions if tuple(r["span"]) in gold]
        if len(entity_regions) < 2 or len({gold[tuple(r["span"])] for r in entity_regions}) < 2:
            continue
        # The image bytes alone, under no name: only the given regions can tell the types.
        own = predictor.predict(tokens=tokens, image=image, regions=regions)
        assert "warnings" not in own
        # Rotate the entities' boxes: each entity's words now point at another entity's shape.
        boxes = [r["box"] for r in entity_regions]
        moved = [{**r, "box": boxes[(i + 1) % len(boxes)]} for i, r in enumerate(entity_regions)]
        moved_answer = predictor.predict(tokens=tokens, image=image, regions=moved)
        own_types, moved_types = _types_by_span(own), _types_by_span(moved_answer)
        for i, region in enumerate(entity_regions):
            span = tuple(region["span"])
            donor = tuple(entity_regions[(i + 1) % len(entity_regions)]["span"])
            if gold[span] == gold[donor]:
                continue
            asked += 1
            followed_own += own_types.get(span) == gold[span]
            followed_moved += moved_types.get(span) == gold[donor]
    assert asked >= 10, asked
    # With its own regions the model types the entities right; with the boxes moved, the types move with them.
    assert followed_own / asked >= 0.7, (followed_own, asked)
    assert followed_moved / asked >= 0.6, (followed_moved, asked)


def test_without_regions_the_image_alone_is_a_warning_and_a_count(trained, caplog):
    root, data, sidecar, tweets = trained
    image_id, tokens, _ = tweets[0]
    predictor = Predictor.from_path(root / "run")
    image = (data / "images" / f"{image_id}.png").read_bytes()
    unnamed = predictor.predict(tokens=tokens, image=image)
    assert [o["label"] for o in unnamed["objects"]] == ["whole image"]
    assert any("no regions" in w for w in unnamed["warnings"])
    # Named as in the sidecar, the same bytes find their groundings there.
    named = predictor.predict(tokens=tokens, image=image, image_id=image_id)
    assert len(named["objects"]) == 1 + len(sidecar[image_id]) and "warnings" not in named
    assert predictor.ungrounded_inputs == 1
