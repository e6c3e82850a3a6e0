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
