"""The `Model` registry, in AllenNLP's shape on top of tango's torch `Model`."""
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import torch
from tango.integrations.torch import Model as TangoModel

from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.modules.token_embedders import TokenEmbedder


class InputTooLongError(ValueError):
    """A tweet longer than the model's `max_words`; the message gives the limit and how to raise it."""


class Model(TangoModel):
    """
    A registrable `torch.nn.Module` built with a `Vocabulary`. `forward(**batch)` returns a dict
    holding `loss` when gold tags are given; `get_metrics(reset)` reports accumulated metrics;
    `make_output_human_readable` turns ids into labels and entity dicts for the predictor.

    # Parameters

    vocab : `Vocabulary`
        The label vocabulary the model predicts over (its "labels" namespace).
    max_words : `int`, optional (default = `None`: no limit)
        Longest tweet `check_lengths` accepts; subclasses give their own default and their
        `length_limit_reason`.
    """

    default_predictor: Optional[str] = None
    # Why a model has its `max_words` limit, for the error that enforces it.
    length_limit_reason: str = ""

    def __init__(self, vocab: Vocabulary, max_words: Optional[int] = None) -> None:
        super().__init__()
        self.vocab = vocab
        if max_words is not None and max_words < 1:
            raise ValueError(f"max_words must be at least 1 (or null for no limit), got {max_words}")
        self.max_words = max_words

    def check_lengths(self, lengths: Iterable[int]) -> None:
        """Raises `InputTooLongError` for a tweet over `max_words` words, before any tensor is made:
        a limit said at once, rather than an allocation of many GB that fails after minutes."""
        if self.max_words is None:
            return
        longest = max(lengths, default=0)
        if longest > self.max_words:
            reason = f" ({self.length_limit_reason})" if self.length_limit_reason else ""
            raise InputTooLongError(
                f"{longest} words is over this model's max_words of {self.max_words}{reason}; "
                f"raise it with -o '{{\"model.max_words\": {longest}}}'"
            )

    def get_metrics(self, reset: bool = False) -> dict[str, float]:
        return {}

    def make_output_human_readable(self, output_dict: dict[str, Any]) -> dict[str, Any]:
        return output_dict

    def sorting_lengths(self, instances: Sequence[TaggingInstance]) -> list[int]:
        """
        Each instance's length as this model pays for it in padding, which batches are bucketed by:
        what its `text_field_embedder`, when it has one, feeds the text model (word pieces and
        special tokens for a transformer), else the number of words.
        """
        embedder = getattr(self, "text_field_embedder", None)
        if isinstance(embedder, TokenEmbedder):
            return embedder.sequence_lengths([list(instance.words) for instance in instances])
        return [len(instance) for instance in instances]

    def device(self) -> torch.device:
        return next(self.parameters()).device
