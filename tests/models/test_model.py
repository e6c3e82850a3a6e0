import torch
from tango.common import Params

from fmit_plugin.commands.evaluate import evaluate_archive
from fmit_plugin.commands.train import train_model
from fmit_plugin.data.data_loader import TaggingDataLoader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.model import Model
from tests.conftest import TWITTER_FIXTURES, tiny_config

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


class _WordCounter(Model):
    def __init__(self, vocab: Vocabulary) -> None:
        super().__init__(vocab)
        self.weight = torch.nn.Parameter(torch.zeros(1))


def test_sorting_lengths_are_word_pieces_with_a_transformer_embedder_else_words(tiny_bert):
    instances = [
        TaggingInstance(["parising", "parising"]),
        TaggingInstance(["a", "b", "c"]),
        TaggingInstance([]),
    ]
    tagger = Model.from_params(Params(tiny_config(tiny_bert)["model"]), vocab=Vocabulary({"labels": LABELS}))
    lengths = tagger.sorting_lengths(instances)
    assert lengths == tagger.text_field_embedder.sequence_lengths([instance.words for instance in instances])
    assert lengths[0] > lengths[1]  # two words of two pieces each ("paris", "##ing") against three of one
    assert _WordCounter(Vocabulary({"labels": LABELS})).sorting_lengths(instances) == [2, 3, 0]


def test_train_and_evaluate_batch_by_the_models_sorting_lengths(tiny_bert, tmp_path, monkeypatch):
    given: list[list[int]] = []
    original = TaggingDataLoader.set_sorting_lengths

    def spy(loader: TaggingDataLoader, lengths: list[int]) -> None:
        given.append(list(lengths))
        original(loader, lengths)

    monkeypatch.setattr(TaggingDataLoader, "set_sorting_lengths", spy)
    config = tiny_config(tiny_bert)
    config["trainer"]["num_epochs"] = 1
    model = train_model(Params(config), tmp_path / "run")
    reader = TwitterMnerReader()
    splits = [reader.read(str(TWITTER_FIXTURES / f"{split}.txt")) for split in ("train", "valid", "test")]
    expected = [model.sorting_lengths(instances) for instances in splits]
    assert given == expected
    given.clear()
    evaluate_archive(tmp_path / "run" / "model.tar.gz", TWITTER_FIXTURES / "test.txt")
    assert given == expected[2:]


def test_forward_refuses_a_tweet_over_max_words_before_the_embedder_runs(monkeypatch):
    """What `evaluate` and `train` meet (issue 16): the limit is checked in `forward`, at once."""
    import pytest

    from fmit_plugin.models.model import InputTooLongError
    from tests.bad_input_helpers import HashingEmbedder

    vocab = Vocabulary({"labels": LABELS})
    for params in ({"type": "crf_tagger", "max_words": 4},
                   {"type": "fmit", "max_words": 4, "visual_dim": 3,
                    "encoder": {"type": "flat_lattice_transformer", "input_dim": 8, "num_layers": 1,
                                "num_attention_heads": 2, "feedforward_hidden_dim": 8}}):
        tagger = Model.from_params(Params({**params, "text_field_embedder": {"type": "test_hashing"}}), vocab=vocab)
        tagger.eval()
        assert len(tagger(words=[["a"] * 4])["tags"][0]) == 4
        monkeypatch.setattr(HashingEmbedder, "forward", lambda *args: pytest.fail("the embedder ran"))
        with pytest.raises(InputTooLongError, match="5 words is over this model's max_words of 4"):
            tagger(words=[["a"] * 3, ["a"] * 5])
        monkeypatch.undo()
    assert Model(vocab).max_words is None  # no limit unless a model sets one
    with pytest.raises(ValueError, match="max_words must be at least 1"):
        Model(vocab, max_words=0)
