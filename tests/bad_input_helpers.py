"""Helpers shared by the bad-input tests (issue 8): a tiny fast tagger written as a serialization directory."""
import json
import zlib
from pathlib import Path
from typing import Optional

import torch
from tango.common import Params

from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.model import Model
from fmit_plugin.modules.token_embedders.token_embedder import TokenEmbedder

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@TokenEmbedder.register("test_hashing", exist_ok=True)
class HashingEmbedder(TokenEmbedder):
    """
    A tiny embedder for tests that need many predictions fast: each word's vector is a learned row
    chosen by a hash of the word. `poison`: a word that makes `forward` fail, standing for a model
    that breaks on one pathological input.
    """

    def __init__(self, dim: int = 8, buckets: int = 64, poison: Optional[str] = None) -> None:
        super().__init__()
        self.buckets = buckets
        self.poison = poison
        self.embedding = torch.nn.Embedding(buckets, dim)

    def get_output_dim(self) -> int:
        return self.embedding.embedding_dim

    def forward(self, words: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.poison is not None and any(self.poison in sentence for sentence in words):
            raise RuntimeError("the model broke on this input")
        length = max((len(sentence) for sentence in words), default=0)
        ids = torch.zeros(len(words), length, dtype=torch.long)
        mask = torch.zeros(len(words), length, dtype=torch.bool)
        for row, sentence in enumerate(words):
            for column, word in enumerate(sentence):
                ids[row, column] = zlib.crc32(word.encode("utf-8", "surrogatepass")) % self.buckets
                mask[row, column] = True
        return self.embedding(ids) * mask.unsqueeze(-1), mask


def write_run(directory: Path, embedder: dict) -> Path:
    """A serialization directory (config.json, vocabulary/, best.th) of an untrained tagger:
    everything `load_archive` needs, without training."""
    config = {"dataset_reader": {"type": "twitter_mner"},
              "model": {"type": "crf_tagger", "text_field_embedder": embedder},
              "data_loader": {"batch_size": 8}}
    vocab = Vocabulary({"labels": LABELS})
    torch.manual_seed(0)
    model = Model.from_params(Params(json.loads(json.dumps(config["model"]))), vocab=vocab)
    with torch.no_grad():  # mostly O, with some entities, so outputs have both
        model.tagging_head.projection.bias.copy_(torch.tensor([1.5, 0.3, 0.3, 0.3, 0.0]))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    vocab.save_to_files(directory / "vocabulary")
    torch.save(model.state_dict(), directory / "best.th")
    return directory
