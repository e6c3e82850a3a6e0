"""Helpers shared by the bad-input tests (issue 8): a tiny fast tagger written as a serialization directory."""
import json
import zlib
from pathlib import Path
from typing import Optional

import numpy
import torch
from PIL import Image
from tango.common import Params

from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.model import Model
from fmit_plugin.modules.token_embedders.token_embedder import TokenEmbedder
from fmit_plugin.vision.backbones import ImageBackbone

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


@ImageBackbone.register("test_mean_colour", exist_ok=True)
class MeanColourBackbone(ImageBackbone):
    """A 3-d "feature": each image's mean colour, so tests see which image a feature came from."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1), requires_grad=False)

    def get_output_dim(self) -> int:
        return 3

    def cache_key(self) -> str:
        return "mean-colour"

    def _feature_map(self, images: list[Image.Image]) -> torch.Tensor:
        means = [numpy.asarray(image, dtype=numpy.float32).mean(axis=(0, 1)) / 255.0 for image in images]
        return torch.tensor(numpy.stack(means)).view(len(images), 3, 1, 1) * self.scale


def write_run(directory: Path, embedder: dict, dataset_reader: Optional[dict] = None,
              model: Optional[dict] = None) -> Path:
    """A serialization directory (config.json, vocabulary/, best.th) of an untrained tagger
    (`crf_tagger` unless `model` gives another type and its keys): everything `load_archive`
    needs, without training."""
    model_config = {"type": "crf_tagger", **(model or {}), "text_field_embedder": embedder}
    config = {"dataset_reader": dataset_reader or {"type": "twitter_mner"},
              "model": model_config,
              "data_loader": {"batch_size": 8}}
    vocab = Vocabulary({"labels": LABELS})
    torch.manual_seed(0)
    tagger = Model.from_params(Params(json.loads(json.dumps(config["model"]))), vocab=vocab)
    with torch.no_grad():  # mostly O, with some entities, so outputs have both
        tagger.tagging_head.projection.bias.copy_(torch.tensor([1.5, 0.3, 0.3, 0.3, 0.0]))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    vocab.save_to_files(directory / "vocabulary")
    torch.save(tagger.state_dict(), directory / "best.th")
    return directory


def one_error_line(argv, capsys) -> str:
    """Runs the CLI on `argv`, expecting exit code 2 with exactly one `error:` line and no traceback; that line."""
    import pytest

    from fmit_plugin.commands import main

    with pytest.raises(SystemExit) as info:
        main(argv=argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "\n" not in lines[0]
    return lines[0]
