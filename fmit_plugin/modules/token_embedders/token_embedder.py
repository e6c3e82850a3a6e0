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

    def embed_out_of_context(self, words: list[list[str]]) -> torch.Tensor:
        """
        `(batch, max_words, dim)`: every word embedded on its own, without its sentence, so that the
        same word has the same vector in every sentence (zeros for padding). By default `forward` on
        each word as a one-word sentence; an embedder can give something cheaper.
        """
        flat = [[word] for sentence in words for word in sentence]
        max_words = max((len(sentence) for sentence in words), default=0)
        if not flat:
            return torch.zeros(len(words), max_words, self.get_output_dim())
        vectors = self.forward(flat)[0][:, 0]  # (all words, dim)
        out = vectors.new_zeros(len(words), max_words, vectors.shape[-1])
        rows = torch.tensor([row for row, sentence in enumerate(words) for _ in sentence], device=vectors.device)
        columns = torch.tensor([column for sentence in words for column in range(len(sentence))], device=vectors.device)
        out[rows, columns] = vectors
        return out
