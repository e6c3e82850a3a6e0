"""The `TokenEmbedder` registry: lists of words -> one vector per word."""
import torch
from tango.common import Registrable


class TokenEmbedder(torch.nn.Module, Registrable):
    """
    Embeds a batch of already-split words. Unlike AllenNLP's, a `TokenEmbedder` here owns its
    tokenization (words -> model inputs), so that changing the text model in a config is a single
    key and an archive needs no separate token indexer.

    `forward(words)` returns `(embeddings, mask)`: `(batch, max_words, dim)` and
    `(batch, max_words)` bool.
    """

    def get_output_dim(self) -> int:
        raise NotImplementedError

    def sequence_lengths(self, words: list[list[str]]) -> list[int]:
        """
        How long each sentence's input to the text model is, in the units padding is paid in, so
        that batches can be made of sentences of similar cost. By default its number of words.
        """
        return [len(sentence) for sentence in words]

    def forward(self, words: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError
