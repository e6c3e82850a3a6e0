"""Shared fixtures: a tiny randomly initialised BERT written to disk, and the small tweet files."""
import os
import re
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
TWITTER_FIXTURES = Path(__file__).parent / "fixtures" / "twitter_mner"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_tiny_bert(directory: Path, texts: list[str], hidden_size: int = 16, seed: int = 0) -> Path:
    """A 1-layer BERT with random weights and a word-level vocabulary over `texts` (lower-cased,
    plus a few word pieces), saved where transformers can load it by path."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ing", "##ed"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # Positional: transformers 4 calls it vocab_file, 5 calls it vocab (and ignores vocab_file=).
    tokenizer = BertTokenizerFast(str(directory / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=2 * hidden_size, max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    return directory


def fixture_texts() -> list[str]:
    texts = []
    for name in ("train.txt", "valid.txt", "test.txt"):
        for line in (TWITTER_FIXTURES / name).read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("IMGID:"):
                texts.append(line.split("\t")[0])
    return texts


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), fixture_texts())


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (a user's clone has no ../shared)")
    return SHARED_DATA


def tiny_config(tiny_bert: Path, data_dir: Path = TWITTER_FIXTURES, **model_overrides) -> dict:
    """A complete training config for the tiny BERT on the small tweet files."""
    return {
        "dataset_reader": {"type": "twitter_mner"},
        "train_data_path": str(data_dir / "train.txt"),
        "validation_data_path": str(data_dir / "valid.txt"),
        "test_data_path": str(data_dir / "test.txt"),
        "evaluate_on_test": True,
        "model": {
            "type": "crf_tagger",
            "text_field_embedder": {"type": "pretrained_transformer_mismatched", "model_name": str(tiny_bert)},
            **model_overrides,
        },
        "data_loader": {"batch_size": 4},
        "trainer": {
            "optimizer": {
                "type": "adam", "lr": 1e-2, "parameter_groups": [[["^text_field_embedder\\."], {"lr": 1e-3}]]
            },
            "num_epochs": 2,
            "seed": 1,
        },
    }


def train_tiny(tiny_bert: Path, directory: Path, **trainer: Any) -> Path:
    """Trains the `tiny_config` tagger into `directory`, its trainer keys changed by `trainer` (say
    `num_epochs=1`); returns `directory`, which then holds `model.tar.gz`."""
    from tango.common import Params

    from fmit_plugin.commands.train import train_model

    config = tiny_config(tiny_bert)
    config["trainer"].update(trainer)
    train_model(Params(config), directory)
    return directory
