"""FMIT with the entity_grounding block: off by default, trains, decodes a box per entity, scores gmner_f1."""
import copy

import pytest
import torch
from tango.common import Params

from fmit_plugin.data.data_loader import collate
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.fmit import Fmit
from fmit_plugin.models.model import Model
from fmit_plugin.predictors.predictor import SentenceTaggerPredictor
from fmit_plugin.vision.visual_objects import VisualObjects
from tests.conftest import tiny_config

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TINY_ENCODER = {"type": "flat_lattice_transformer", "input_dim": 16, "num_layers": 1,
                "num_attention_heads": 2, "feedforward_hidden_dim": 32, "dropout_prob": 0.0, "max_distance": 64}
BOXES = [(0.0, 0.0, 10.0, 10.0), (20.0, 0.0, 30.0, 10.0), (0.0, 20.0, 10.0, 30.0)]


def _model(tiny_bert, **overrides) -> Fmit:
    torch.manual_seed(0)
    config = {"type": "fmit", "text_field_embedder": tiny_config(tiny_bert)["model"]["text_field_embedder"],
              "encoder": copy.deepcopy(TINY_ENCODER), "visual_dim": 8, "dropout": 0.0, "boundary_weight": 0.0,
              **overrides}
    model = Model.from_params(Params(config), vocab=Vocabulary({"labels": LABELS}))
    assert isinstance(model, Fmit)
    return model


def _instances() -> list[TaggingInstance]:
    """Two entities and three class-agnostic candidates spanning the whole sentence: each name's
    candidate has its own feature (the look of that name's thing); its place among the candidates and
    its box change from tweet to tweet, so only matching words to features finds it. The third tweet's
    second entity is not in the image."""
    looks = {"George": torch.eye(8)[0] * 3, "Paris": torch.eye(8)[1] * 3}
    instances = []
    for index, (first, second, order) in enumerate([
        ("George", "Paris", (0, 1, 2)), ("Paris", "George", (2, 0, 1)), ("George", "Paris", (1, 2, 0)),
        ("Paris", "George", (0, 2, 1)), ("George", "Paris", (2, 1, 0)), ("Paris", "George", (1, 0, 2)),
    ]):
        words = [first, "with", second]  # words the tiny BERT knows
        tags = ["B-PER", "O", "B-LOC"]
        features = torch.zeros(3, 8)
        features[order[0]] = looks[first]
        features[order[2]] = torch.eye(8)[5] * 3  # a distractor
        boxes: dict[tuple[int, int], list] = {(0, 1): [BOXES[order[0]]], (2, 3): []}
        if index != 2:
            features[order[1]] = looks[second]
            boxes[(2, 3)] = [BOXES[order[1]]]
        visual = VisualObjects(features, torch.tensor([[0, 2]] * 3), ["proposal"] * 3, list(BOXES))
        instances.append(TaggingInstance(words, tags, visual=visual, entity_boxes=boxes))
    return instances


def test_off_by_default_adds_nothing(tiny_bert):
    plain = _model(tiny_bert)
    assert plain.entity_grounding is None
    assert not any("grounding" in key for key in plain.state_dict())
    grounded = _model(tiny_bert, entity_grounding={"projection_dim": 8})
    extra = set(grounded.state_dict()) - set(plain.state_dict())
    assert extra and all(key.startswith("entity_grounding.") for key in extra)
    assert set(plain.state_dict()) <= set(grounded.state_dict())
    batch = collate(_instances(), plain.vocab)
    plain.eval()
    output = plain.make_output_human_readable(plain(**batch))
    assert "box" not in output["entities"][0][0] and "gmner-f1" not in plain.get_metrics()


def test_learns_which_candidate_shows_which_entity(tiny_bert):
    model = _model(tiny_bert, entity_grounding={"projection_dim": 8, "loss_weight": 1.0})
    instances = _instances()
    batch = collate(instances, model.vocab)
    assert batch["grounding_targets"].shape == (6, 2, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first_loss = None
    for _ in range(150):
        optimizer.zero_grad()
        output = model(**batch)
        output["loss"].backward()
        optimizer.step()
        first_loss = first_loss if first_loss is not None else output["grounding_loss"].item()
    assert output["grounding_loss"].item() < 0.1 * first_loss
    model.eval()
    model.get_metrics(reset=True)
    model(**batch)
    metrics = model.get_metrics(reset=True)
    assert metrics["gmner-f1"] == 1.0 and metrics["entity-f1"] == metrics["f1-measure-overall"] == 1.0
    assert metrics["grounding-accuracy"] == 1.0

    # The predictor's answer: each entity's box (or null) and its confidence.
    answers = SentenceTaggerPredictor(model, _Reader(instances)).predict_instances(instances)
    first, third = answers[0]["entities"], answers[2]["entities"]
    assert [entity["box"] for entity in first] == [list(BOXES[0]), list(BOXES[1])]
    assert third[0]["box"] == list(BOXES[1]) and third[1]["box"] is None
    assert all(0.5 < entity["box_confidence"] <= 1.0 for entity in first + third)


class _Reader:
    """The predictor only needs a reader for JSON input; these tests give it instances."""

    def __init__(self, instances):
        self.instances = instances


def test_a_training_batch_of_tweets_without_entities_trains(tiny_bert):
    # Such a batch has (batch, 0, 2) entity spans; it crashed the grounding head at 1500 generated tweets.
    model = _model(tiny_bert, entity_grounding={"projection_dim": 8})
    instances = _instances()[:2]
    for instance in instances:
        instance.tags = ["O"] * len(instance.words)
        instance.entity_boxes = {}
    batch = collate(instances, model.vocab)
    assert batch["entity_spans"].shape == (2, 0, 2)
    model.train()
    output = model(**batch)
    assert output["grounding_loss"].item() == 0.0
    output["loss"].backward()
    assert model.tagging_head.projection.weight.grad is not None
    model.eval()
    model.get_metrics(reset=True)
    readable = model.make_output_human_readable(model(**batch))
    assert all("box" in entity for sentence in readable["entities"] for entity in sentence)
    assert model.get_metrics()["gmner-f1"] == (1.0 if not any(readable["entities"]) else 0.0)


def _region_typed_instances() -> list[TaggingInstance]:
    """As `_instances`, but each entity's type is drawn apart from its name and shown only by its
    candidate's feature (a PER look or a LOC look beside the name's own), so the words cannot type it."""
    looks = {"George": torch.eye(8)[0] * 3, "Paris": torch.eye(8)[1] * 3}
    type_look = {"PER": torch.eye(8)[3] * 3, "LOC": torch.eye(8)[4] * 3}
    instances = []
    for first, second, first_type, order in [
        ("George", "Paris", "PER", (0, 1, 2)), ("Paris", "George", "LOC", (2, 0, 1)),
        ("George", "Paris", "LOC", (1, 2, 0)), ("Paris", "George", "PER", (0, 2, 1)),
        ("George", "Paris", "LOC", (2, 1, 0)), ("Paris", "George", "PER", (1, 0, 2)),
        ("George", "Paris", "PER", (2, 0, 1)), ("Paris", "George", "LOC", (0, 1, 2)),
    ]:
        second_type = "LOC" if first_type == "PER" else "PER"
        features = torch.zeros(3, 8)
        features[order[0]] = looks[first] + type_look[first_type]
        features[order[1]] = looks[second] + type_look[second_type]
        features[order[2]] = torch.eye(8)[5] * 3  # a distractor
        visual = VisualObjects(features, torch.tensor([[0, 2]] * 3), ["proposal"] * 3, list(BOXES))
        boxes = {(0, 1): [BOXES[order[0]]], (2, 3): [BOXES[order[1]]]}
        instances.append(TaggingInstance([first, "with", second], [f"B-{first_type}", "O", f"B-{second_type}"],
                                         visual=visual, entity_boxes=boxes))
    return instances


def test_type_from_region_retags_each_entity_with_the_heads_type_and_keeps_its_boundaries(tiny_bert):
    model = _model(tiny_bert, entity_grounding={"projection_dim": 8, "type_from_region": True})
    head = model.entity_grounding
    assert head is not None and head.typer is not None and head.entity_types == ("LOC", "PER")
    batch = collate(_instances(), model.vocab)
    model.eval()
    with torch.no_grad():
        head.typer.bias.copy_(torch.tensor([50.0, -50.0]))  # always LOC
        readable = model.make_output_human_readable(model(**batch))
        head.typer.bias.copy_(torch.tensor([-50.0, 50.0]))  # always PER
        as_per = model.make_output_human_readable(model(**batch))
    spans = [[(e["start"], e["end"]) for e in sentence] for sentence in readable["entities"]]
    assert any(spans) and spans == [[(e["start"], e["end"]) for e in sentence] for sentence in as_per["entities"]]
    for sentence, tags in zip(readable["entities"], readable["tags"]):
        for entity in sentence:
            assert entity["type"] == "LOC" and entity["type_confidence"] == pytest.approx(1.0)
            assert tags[entity["start"]] == "B-LOC" and set(tags[entity["start"] + 1 : entity["end"]]) <= {"I-LOC"}
    assert all(entity["type"] == "PER" for sentence in as_per["entities"] for entity in sentence)


def test_type_loss_is_the_cross_entropy_of_the_gold_types(tiny_bert):
    model = _model(tiny_bert, entity_grounding={"projection_dim": 8, "type_from_region": True})
    batch = collate(_instances(), model.vocab)
    model.train()
    output = model(**batch)
    head = model.entity_grounding
    assert head is not None
    head_inputs = (output["grounding_inputs"], batch["entity_spans"], batch["entity_span_mask"])
    torch.manual_seed(1)  # no dropout in this model: the same outputs again
    type_logits, _ = head.types(*head_inputs)
    # Every tweet of `_instances`: a PER first (type 1 of LOC, PER), a LOC last (type 0).
    gold = torch.tensor([[1, 0]] * 6)
    expected = torch.nn.functional.cross_entropy(type_logits.reshape(-1, 2), gold.reshape(-1))
    assert output["type_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    without = _model(tiny_bert, entity_grounding={"projection_dim": 8})
    assert "type_loss" not in without(**collate(_instances(), without.vocab))


def test_type_from_region_learns_types_only_the_regions_show(tiny_bert):
    model = _model(tiny_bert, entity_grounding={"projection_dim": 8, "type_from_region": True})
    batch = collate(_region_typed_instances(), model.vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        optimizer.zero_grad()
        model(**batch)["loss"].backward()
        optimizer.step()
    model.eval()
    model.get_metrics(reset=True)
    model(**batch)
    metrics = model.get_metrics(reset=True)
    assert metrics["f1-measure-overall"] == 1.0 and metrics["gmner-f1"] == 1.0


def test_name_term_trains_and_its_state_round_trips(tiny_bert):
    settings = {"projection_dim": 8, "name_projection_dim": 4}
    model = _model(tiny_bert, entity_grounding=settings)
    head = model.entity_grounding
    assert head is not None and head.uses_names and head.name_query is not None
    assert head.name_query.in_features == 16 and head.appearance_norm.num_features == 8  # the model's dims
    instances = _instances()
    batch = collate(instances, model.vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(150):
        optimizer.zero_grad()
        output = model(**batch)
        output["loss"].backward()
        optimizer.step()
        first = first if first is not None else (output["grounding_loss"].item(), output["name_loss"].item())
    assert output["name_loss"].item() < 0.5 * first[1] and output["grounding_loss"].item() < 0.1 * first[0]
    # The running statistics are those of the real candidates (the batch, every step the same).
    real = batch["object_features"][batch["object_mask"].bool()]
    assert torch.allclose(head.appearance_norm.running_mean, real.mean(0), atol=1e-4)
    model.eval()
    model.get_metrics(reset=True)
    readable = model.make_output_human_readable(model(**batch))
    assert model.get_metrics(reset=True)["gmner-f1"] == 1.0
    # A fresh model given the trained state (the BatchNorm's running statistics included) answers the same.
    loaded = _model(tiny_bert, entity_grounding=settings)
    loaded.load_state_dict(model.state_dict())
    loaded.eval()
    again = loaded.make_output_human_readable(loaded(**batch))
    assert again["entities"] == readable["entities"]
    assert [entity["box"] for entity in again["entities"][0]] == [list(BOXES[0]), list(BOXES[1])]
