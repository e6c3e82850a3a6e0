"""The `Model` registry, in AllenNLP's shape on top of tango's torch `Model`."""
from collections.abc import Sequence
from typing import Any, Optional

import torch
from tango.integrations.torch import Model as TangoModel

from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.modules.token_embedders import TokenEmbedder


class Model(TangoModel):
    """
    A registrable `torch.nn.Module` built with a `Vocabulary`. `forward(**batch)` returns a dict
    holding `loss` when gold tags are given; `get_metrics(reset)` reports accumulated metrics;
    `make_output_human_readable` turns ids into labels and entity dicts for the predictor.
    """

    default_predictor: Optional[str] = None

    def __init__(self, vocab: Vocabulary) -> None:
        super().__init__()
        self.vocab = vocab

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
