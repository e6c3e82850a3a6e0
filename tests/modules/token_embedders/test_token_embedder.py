import torch

from fmit_plugin.modules.token_embedders import TokenEmbedder


class _ContextualEmbedder(TokenEmbedder):
    """Each word's vector is its length plus the number of words of its sentence: contextual."""

    def get_output_dim(self) -> int:
        return 2

    def forward(self, words: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(sentence) for sentence in words)
        vectors = torch.zeros(len(words), width, 2)
        mask = torch.zeros(len(words), width, dtype=torch.bool)
        for row, sentence in enumerate(words):
            for column, word in enumerate(sentence):
                vectors[row, column] = torch.tensor([len(word), len(sentence)])
                mask[row, column] = True
        return vectors, mask


def test_by_default_out_of_context_embeds_each_word_as_a_sentence_of_its_own():
    embedder = _ContextualEmbedder()
    words = [["George", "in", "Paris"], ["Paris"]]
    assert embedder(words)[0][0, 2].tolist() == [5.0, 3.0]  # in context
    vectors = embedder.embed_out_of_context(words)
    assert vectors.shape == (2, 3, 2)
    assert vectors[0].tolist() == [[6.0, 1.0], [2.0, 1.0], [5.0, 1.0]]
    assert vectors[1].tolist() == [[5.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert embedder.embed_out_of_context([[], []]).shape == (2, 0, 2)
