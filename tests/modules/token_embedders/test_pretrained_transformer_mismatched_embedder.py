import pytest
import torch
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules.token_embedders import PretrainedTransformerMismatchedEmbedder, TokenEmbedder


def _embedder(tiny_bert, seed=0, **kwargs):
    torch.manual_seed(seed)
    embedder = PretrainedTransformerMismatchedEmbedder(model_name=str(tiny_bert), **kwargs)
    embedder.eval()
    return embedder


def test_builds_from_config_and_embeds_one_vector_per_word(tiny_bert):
    embedder = TokenEmbedder.from_params(
        Params({"type": "pretrained_transformer_mismatched", "model_name": str(tiny_bert)})
    )
    words = [["George", "Zimmerman", "spotted"], ["Paris"]]
    vectors, mask = embedder(words)
    assert vectors.shape == (2, 3, embedder.get_output_dim()) == (2, 3, 16)
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    assert torch.all(vectors[1, 1:] == 0)


def test_first_and_avg_pool_the_pieces_of_a_word(tiny_bert):
    first = _embedder(tiny_bert, sub_token_mode="first")
    average = _embedder(tiny_bert, sub_token_mode="avg")
    average.load_state_dict(first.state_dict())
    words = [["parising", "paris"]]  # "parising" -> "paris" "##ing"
    pieces = first.tokenizer("parising", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    with torch.no_grad():
        paris = first.tokenizer("paris", add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([first._prefix + pieces + paris + first._suffix])
        hidden = first.transformer_model(input_ids=input_ids).last_hidden_state[0]
        f, _ = first(words)
        a, _ = average(words)
    offset = len(first._prefix)
    assert torch.allclose(f[0, 0], hidden[offset], atol=1e-5)
    assert torch.allclose(a[0, 0], hidden[offset : offset + len(pieces)].mean(0), atol=1e-5)
    assert torch.allclose(a[0, 1], f[0, 1], atol=1e-5)  # one-piece word: both modes agree


def test_word_without_pieces_gets_the_unknown_token_vector(tiny_bert):
    embedder = _embedder(tiny_bert)
    assert embedder.tokenizer("\u200b", add_special_tokens=False)["input_ids"] == []
    with torch.no_grad():
        vectors, mask = embedder([["Obama", "\u200b", "Paris"]])
        reference, _ = embedder([["Obama", "[UNK]", "Paris"]])
    assert mask.all()
    assert vectors[0, 1].abs().sum() > 0
    assert torch.allclose(vectors, reference, atol=1e-5)


def test_batching_and_padding_do_not_change_word_vectors(tiny_bert):
    embedder = _embedder(tiny_bert)
    sentences = [["Obama", "visits", "Paris", "today"], ["NASA"], ["Snow", "storm", "hits", "New", "York"]]
    with torch.no_grad():
        together, _ = embedder(sentences)
        for i, sentence in enumerate(sentences):
            alone, _ = embedder([sentence])
            assert torch.allclose(together[i, : len(sentence)], alone[0], atol=1e-5)


def test_long_tweets_are_windowed_never_truncated(tiny_bert):
    windowed = _embedder(tiny_bert, max_length=8)
    whole = _embedder(tiny_bert, max_length=64)
    whole.load_state_dict(windowed.state_dict())
    vocabulary = ["obama", "visits", "paris", "and", "berlin", "today", "nasa", "mars", "snow", "storm"]
    generator = torch.Generator().manual_seed(0)
    long_tweet = [vocabulary[int(i)] for i in torch.randint(0, 10, (42,), generator=generator)]
    with torch.no_grad():
        vectors, mask = windowed([long_tweet, ["nasa"]])
        short_windowed, _ = windowed([["obama", "visits", "paris"]])
        short_whole, _ = whole([["obama", "visits", "paris"]])
    assert vectors.shape[:2] == (2, 42) and mask[0].all()
    assert torch.isfinite(vectors).all() and (vectors[0].abs().sum(-1) > 0).all()
    # A tweet that fits in one window is encoded exactly as without windows.
    assert torch.allclose(short_windowed, short_whole, atol=1e-5)


def test_long_tweet_middle_word_matches_its_central_window(tiny_bert):
    embedder = _embedder(tiny_bert, max_length=8)  # 6 pieces per window, stride 3
    words = [f"w{i}" for i in range(12)]  # unknown words: one [UNK] piece each
    with torch.no_grad():
        vectors, _ = embedder([words])
        # windows start at pieces 0, 3 and 6; piece 5 is most central in the one starting at 3
        window = embedder._prefix + [embedder._unknown_id] * 6 + embedder._suffix
        hidden = embedder.transformer_model(input_ids=torch.tensor([window])).last_hidden_state[0]
    assert torch.allclose(vectors[0, 5], hidden[len(embedder._prefix) + 2], atol=1e-5)


@pytest.mark.parametrize("max_length", [8, 64])
def test_sequence_lengths_are_the_word_piece_slots_the_transformer_gets(tiny_bert, max_length):
    # The base embedder counts words; this one counts what it feeds the transformer, windows,
    # special tokens and the unknown piece of a word without pieces included.
    sentences = [
        ["parising", "paris"],  # 3 pieces
        ["Obama", "\u200b", "Paris"],
        [],
        [f"w{i}" for i in range(12)],  # 12 pieces: three windows when max_length is 8
        ["nasa"],
    ]
    embedder = _embedder(tiny_bert, max_length=max_length)
    expected = [
        int(embedder.word_pieces([sentence], torch.device("cpu")).attention_mask.sum()) for sentence in sentences
    ]
    assert embedder.sequence_lengths(sentences) == expected
    assert expected[0] > len(sentences[0]) and expected[2] == 2
    assert expected[3] == (3 * (6 + 2) if max_length == 8 else 12 + 2)
    assert TokenEmbedder.sequence_lengths(embedder, sentences) == [2, 3, 0, 12, 1]


def test_configuration_errors(tiny_bert, tmp_path):
    with pytest.raises(ConfigurationError, match="sub_token_mode"):
        PretrainedTransformerMismatchedEmbedder(str(tiny_bert), sub_token_mode="last")
    with pytest.raises(ConfigurationError, match="local folder"):
        PretrainedTransformerMismatchedEmbedder(str(tmp_path / "no_such_model"))
    with pytest.raises(ConfigurationError, match="not installed"):
        PretrainedTransformerMismatchedEmbedder("pkg:no_such_package_xyz/model")


def test_frozen_and_random_weight_options(tiny_bert):
    frozen = _embedder(tiny_bert, train_parameters=False)
    assert not any(p.requires_grad for p in frozen.transformer_model.parameters())
    random_a = _embedder(tiny_bert, seed=1, load_weights=False)
    loaded = _embedder(tiny_bert)
    name, parameter = next(iter(loaded.transformer_model.named_parameters()))
    assert not torch.equal(dict(random_a.transformer_model.named_parameters())[name], parameter)
    mixed = _embedder(tiny_bert, last_layer_only=False)
    vectors, _ = mixed([["paris"]])
    vectors.sum().backward()
    assert mixed._scalar_mix.scalar_parameters[0].grad is not None


def test_out_of_context_a_word_is_the_mean_of_its_pieces_input_embeddings(tiny_bert):
    embedder = _embedder(tiny_bert)
    words = [["George", "Zimmerman", "spotted"], ["Zimmerman"]]
    vectors = embedder.embed_out_of_context(words)
    assert vectors.shape == (2, 3, embedder.get_output_dim())
    table = embedder.transformer_model.get_input_embeddings().weight
    for row, sentence in enumerate(words):
        for column, word in enumerate(sentence):
            ids = embedder.tokenizer(word, add_special_tokens=False)["input_ids"]
            assert torch.allclose(vectors[row, column], table[ids].mean(0), atol=1e-6)
    assert torch.all(vectors[1, 1:] == 0)  # padding
    # The same word, whatever its sentence: unlike `forward`, whose vectors mix in the context.
    assert torch.equal(vectors[0, 1], vectors[1, 0])
    contextual, _ = embedder(words)
    assert not torch.allclose(contextual[0, 1], contextual[1, 0])
    assert embedder.embed_out_of_context([[]]).shape == (1, 0, embedder.get_output_dim())
