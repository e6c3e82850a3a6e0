import pytest
import torch
from PIL import Image

from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.crf_tagger import CrfTagger
from fmit_plugin.modules.token_embedders.pretrained_transformer_mismatched_embedder import (
    PretrainedTransformerMismatchedEmbedder,
)
from fmit_plugin.predictors import Predictor, SentenceTaggerPredictor

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
ENTITY_KEYS = {"text", "type", "start", "end", "confidence"}


class _NoModel(torch.nn.Module):
    """json_to_instance touches the model only to ask whether a tweet is too long."""

    def check_lengths(self, lengths):
        pass


@pytest.fixture
def reader_only_predictor():
    return SentenceTaggerPredictor(_NoModel(), TwitterMnerReader())


@pytest.fixture(scope="module")
def tagger(tiny_bert):
    torch.manual_seed(0)
    vocab = Vocabulary({"labels": LABELS})
    model = CrfTagger(vocab, PretrainedTransformerMismatchedEmbedder(model_name=str(tiny_bert)))
    # make the random tagger predict some entities: favour B-PER / I-PER emissions a little
    with torch.no_grad():
        model.tagging_head.projection.bias.copy_(torch.tensor([0.0, 0.8, 0.8, 0.6, 0.2]))
    return model


# ------------------------------------------------------------------ json_to_instance


def test_registered():
    assert Predictor.by_name("sentence_tagger") is SentenceTaggerPredictor


def test_json_to_instance_tokens(reader_only_predictor):
    instance = reader_only_predictor.json_to_instance({"tokens": ["I", "love", "Paris"]})
    assert instance.words == ["I", "love", "Paris"]
    assert instance.tags is None
    assert instance.image_id is None and instance.image_path is None
    assert "id" not in instance.metadata


def test_json_to_instance_sentence_uses_tweet_tokenizer(reader_only_predictor):
    instance = reader_only_predictor.json_to_instance({"sentence": "RT @user: Flying to Paris! #travel"})
    assert instance.words == ["RT", "@user", ":", "Flying", "to", "Paris", "!", "#travel"]


def test_json_to_instance_tokens_win_over_sentence(reader_only_predictor):
    instance = reader_only_predictor.json_to_instance({"tokens": ["a"], "sentence": "b c"})
    assert instance.words == ["a"]


def test_json_to_instance_image_id_and_path(tmp_path):
    image = tmp_path / "1015799.jpg"
    Image.new("RGB", (2, 2)).save(image)
    predictor = SentenceTaggerPredictor(_NoModel(), TwitterMnerReader(image_dir=str(tmp_path)))
    by_id = predictor.json_to_instance({"tokens": ["x"], "image": "1015799"})
    assert (by_id.image_id, by_id.image_path) == ("1015799", str(image))
    by_path = predictor.json_to_instance({"tokens": ["x"], "image": str(image)})
    assert (by_path.image_id, by_path.image_path) == ("1015799", str(image))
    absent = predictor.json_to_instance({"tokens": ["x"], "image": "424242"})
    assert (absent.image_id, absent.image_path) == ("424242", None)


def test_json_to_instance_echoes_id(reader_only_predictor):
    assert reader_only_predictor.json_to_instance({"tokens": ["x"], "id": "tweet-7"}).metadata["id"] == "tweet-7"
    assert reader_only_predictor.json_to_instance({"sentence": "x", "id": 0}).metadata["id"] == 0


@pytest.mark.parametrize(
    ("json_dict", "match"),
    [
        ({}, '"tokens".*"sentence"'),
        ({"text": "hello"}, '"tokens".*"sentence"'),
        ({"tokens": "I love Paris"}, '"tokens" must be a list of strings'),
        ({"tokens": ["I", 3]}, '"tokens" must be a list of strings'),
        ({"tokens": None}, '"tokens" must be a list of strings'),
        ({"sentence": ["I", "love"]}, '"sentence" must be a string'),
        ({"sentence": None}, '"sentence" must be a string'),
        ({"tokens": ["x"], "image": 12}, '"image" must be a string'),
        (["I", "love", "Paris"], "expected a JSON object, got list"),
        ("I love Paris", "expected a JSON object, got str"),
        (None, "expected a JSON object, got NoneType"),
    ],
)
def test_json_to_instance_errors(reader_only_predictor, json_dict, match):
    with pytest.raises(ValueError, match=match):
        reader_only_predictor.json_to_instance(json_dict)


# ------------------------------------------------------------------ prediction with a real tiny model


INPUTS = [
    {"tokens": ["Barack", "Obama", "visits", "Chicago", "for", "a", "speech"], "id": "a"},
    {"sentence": "I love London in the spring"},
    {"tokens": [], "id": 3},
    {"tokens": ["Messi"], "id": "d"},
    {"sentence": "Taylor Swift new album Red is out", "image": "109", "id": "e"},
]


def _check_answer(answer):
    tokens, tags = answer["tokens"], answer["tags"]
    assert len(tags) == len(tokens)
    assert set(tags) <= set(LABELS)
    for entity in answer["entities"]:
        assert set(entity) == ENTITY_KEYS
        assert 0 <= entity["start"] < entity["end"] <= len(tokens)
        assert entity["text"] == " ".join(tokens[entity["start"] : entity["end"]])
        assert entity["type"] in {"PER", "LOC"}
        assert tags[entity["start"]] == f"B-{entity['type']}"
        assert all(t == f"I-{entity['type']}" for t in tags[entity["start"] + 1 : entity["end"]])
        assert 0.0 <= entity["confidence"] <= 1.0


def test_predict_batch_json(tagger):
    predictor = SentenceTaggerPredictor(tagger, TwitterMnerReader())
    answers = predictor.predict_batch_json(INPUTS)
    assert len(answers) == len(INPUTS)
    assert [a.get("id") for a in answers] == ["a", None, 3, "d", "e"]
    assert "id" not in answers[1]
    assert answers[0]["tokens"] == INPUTS[0]["tokens"]
    assert answers[1]["tokens"] == ["I", "love", "London", "in", "the", "spring"]
    assert answers[2]["tokens"] == [] and answers[2]["tags"] == [] and answers[2]["entities"] == []
    assert answers[3]["tokens"] == ["Messi"] and len(answers[3]["tags"]) == 1
    assert answers[4]["image"] == "109" and "image" not in answers[0]
    for answer in answers:
        _check_answer(answer)
    assert sum(len(a["entities"]) for a in answers) > 0, "the biased tiny model should find some entity"
    # every B- tag starts an entity that is reported
    for answer in answers:
        assert len(answer["entities"]) == sum(t.startswith("B-") for t in answer["tags"])


def test_predictions_do_not_depend_on_batch_company(tagger):
    predictor = SentenceTaggerPredictor(tagger, TwitterMnerReader())
    together = predictor.predict_batch_json(INPUTS)
    alone = [predictor.predict_batch_json([item])[0] for item in INPUTS]
    for a, b in zip(together, alone):
        assert a["tags"] == b["tags"]
        assert [(e["start"], e["end"], e["type"]) for e in a["entities"]] == [
            (e["start"], e["end"], e["type"]) for e in b["entities"]
        ]
        for ea, eb in zip(a["entities"], b["entities"]):
            assert ea["confidence"] == pytest.approx(eb["confidence"], abs=1e-4)


def test_prediction_is_deterministic_even_if_model_was_training(tagger):
    tagger.train()
    predictor = SentenceTaggerPredictor(tagger, TwitterMnerReader())
    first = predictor.predict_batch_json(INPUTS)
    second = predictor.predict_batch_json(INPUTS)
    assert first == second


def test_warnings_of_an_input_come_back_with_its_answer_and_only_then(tagger):
    predictor = SentenceTaggerPredictor(tagger, TwitterMnerReader())
    warned, quiet = (predictor.json_to_instance({"tokens": ["Taylor", "sings"]}) for _ in range(2))
    warned.warnings.append("image not used (corrupt: x.jpg: cannot be decoded)")
    answers = predictor.predict_instances([warned, quiet])
    assert answers[0]["warnings"] == ["image not used (corrupt: x.jpg: cannot be decoded)"]
    assert "warnings" not in answers[1] and answers[0]["tags"] == answers[1]["tags"]


def test_predict_only_empty_inputs_skips_the_model():
    predictor = SentenceTaggerPredictor(_NoModel(), TwitterMnerReader())
    assert predictor.predict_batch_json([{"tokens": [], "id": 1}, {"sentence": "  "}]) == [
        {"id": 1, "tokens": [], "tags": [], "entities": []},
        {"tokens": [], "tags": [], "entities": []},
    ]
