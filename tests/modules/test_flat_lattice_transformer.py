import math

import pytest
import torch
from allennlp_light.modules.seq2seq_encoders import Seq2SeqEncoder
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules.flat_lattice import build_flat_lattice
from fmit_plugin.modules.flat_lattice_transformer import FlatLatticeTransformer, interaction_parameter_count

DIM = 16


def _encoder(**kwargs) -> FlatLatticeTransformer:
    torch.manual_seed(0)
    config = {"input_dim": DIM, "num_layers": 2, "num_attention_heads": 2, "feedforward_hidden_dim": 32}
    config.update(kwargs)
    return FlatLatticeTransformer(**config).double().eval()


def _sources(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    words = torch.randn(2, 5, DIM, generator=generator, dtype=torch.double)
    word_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    objects = torch.randn(2, 3, DIM, generator=generator, dtype=torch.double)
    object_mask = torch.tensor([[True, True, True], [True, True, False]])
    spans = torch.tensor([[[0, 4], [1, 2], [3, 3]], [[0, 2], [1, 1], [0, 0]]])
    cls = torch.randn(DIM, generator=generator, dtype=torch.double)
    sep = torch.randn(DIM, generator=generator, dtype=torch.double)
    return words, word_mask, objects, object_mask, spans, cls, sep


def _encode(encoder, words, word_mask, objects, object_mask, spans, cls, sep):
    lattice = build_flat_lattice(words, word_mask, objects, object_mask, spans, cls, sep)
    encoded = encoder(lattice.embeddings, lattice.mask, lattice.head, lattice.tail)
    return lattice, encoded


def test_output_shape_and_dimensions():
    encoder = _encoder()
    lattice, encoded = _encode(encoder, *_sources())
    assert encoded.shape == lattice.embeddings.shape == (2, 10, DIM)
    assert encoder.get_input_dim() == encoder.get_output_dim() == DIM
    assert not encoder.is_bidirectional()
    assert torch.isfinite(encoded).all()
    # padding cells are zeroed
    assert (encoded[~lattice.mask] == 0).all()


def test_attention_scores_follow_eq_10():
    encoder = _encoder()
    attention = encoder.layers[0].attention
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(1, 4, DIM, generator=generator, dtype=torch.double)
    head = torch.tensor([[0, 1, 2, 1]])
    tail = torch.tensor([[0, 1, 2, 2]])
    relative = encoder.relative_position(head, tail)
    scores = attention.scores(inputs, relative)

    heads, head_dim = attention.num_heads, attention.head_dim
    query = attention.query(inputs)[0]
    key = attention.key(inputs)[0]
    relative_key = attention.key_relative(relative)[0]
    for h in range(heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        u, v = attention.u[h], attention.v[h]
        for i in range(4):
            for j in range(4):
                q_i, k_j, r_ij = query[i, part], key[j, part], relative_key[i, j, part]
                expected = q_i @ k_j + q_i @ r_ij + u @ k_j + v @ r_ij
                assert math.isclose(
                    scores[0, h, i, j].item(),
                    expected.item() / math.sqrt(head_dim),
                    rel_tol=1e-9,
                    abs_tol=1e-9,
                )


def test_depends_on_relative_positions_only():
    encoder = _encoder()
    lattice, encoded = _encode(encoder, *_sources())
    shifted = encoder(lattice.embeddings, lattice.mask, lattice.head + 11, lattice.tail + 11)
    assert torch.allclose(encoded, shifted, atol=1e-10)
    # ... but the positions do matter
    other = encoder(lattice.embeddings, lattice.mask, lattice.head.flip(1), lattice.tail.flip(1))
    assert not torch.allclose(encoded[lattice.mask], other[lattice.mask], atol=1e-4)


def test_padding_cells_and_padding_objects_do_not_change_real_cells():
    encoder = _encoder()
    words, word_mask, objects, object_mask, spans, cls, sep = _sources()
    # example 1 alone, without padding words or objects
    alone_lattice, alone = _encode(
        encoder,
        words[1:, :3],
        word_mask[1:, :3],
        objects[1:, :2],
        object_mask[1:, :2],
        spans[1:, :2],
        cls,
        sep,
    )
    assert alone_lattice.mask.all()
    # example 1 in a batch with a longer example 0, plus garbage padding objects and words
    padded_objects = torch.cat([objects, 1e3 * torch.ones(2, 2, DIM, dtype=torch.double)], dim=1)
    padded_mask = torch.cat([object_mask, torch.zeros(2, 2, dtype=torch.bool)], dim=1)
    padded_spans = torch.cat([spans, torch.zeros(2, 2, 2, dtype=torch.long)], dim=1)
    words = words.clone()
    words[1, 3:] = -1e3
    batch_lattice, batched = _encode(
        encoder, words, word_mask, padded_objects, padded_mask, padded_spans, cls, sep
    )
    assert batch_lattice.embeddings.size(1) > alone_lattice.embeddings.size(1)
    cells = alone.size(1)
    assert torch.allclose(batched[1, :cells], alone[0], atol=1e-10)
    assert torch.allclose(
        batch_lattice.word_outputs(batched)[1, :3], alone_lattice.word_outputs(alone)[0], atol=1e-10
    )


def test_permuting_objects_with_their_spans_permutes_only_object_outputs():
    encoder = _encoder()
    words, word_mask, objects, object_mask, spans, cls, sep = _sources()
    lattice, encoded = _encode(encoder, words, word_mask, objects, object_mask, spans, cls, sep)
    permutation = torch.tensor([2, 0, 1])
    permuted_lattice, permuted = _encode(
        encoder,
        words,
        word_mask,
        objects[:, permutation],
        object_mask[:, permutation],
        spans[:, permutation],
        cls,
        sep,
    )
    assert torch.allclose(lattice.word_outputs(encoded), permuted_lattice.word_outputs(permuted), atol=1e-10)
    assert torch.allclose(
        lattice.object_outputs(encoded)[:, permutation], permuted_lattice.object_outputs(permuted), atol=1e-10
    )
    # permuting the objects but not their spans does change the words' outputs
    _, mismatched = _encode(encoder, words, word_mask, objects[:, permutation], object_mask, spans, cls, sep)
    assert not torch.allclose(lattice.word_outputs(encoded), lattice.word_outputs(mismatched), atol=1e-4)


def test_default_positions_are_a_plain_sequence():
    encoder = _encoder()
    inputs = torch.randn(2, 6, DIM, dtype=torch.double)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    positions = torch.arange(6).expand(2, 6)
    assert torch.allclose(encoder(inputs, mask), encoder(inputs, mask, positions, positions), atol=1e-12)
    assert torch.allclose(encoder(inputs), encoder(inputs, torch.ones(2, 6, dtype=torch.bool)), atol=1e-12)
    with pytest.raises(ValueError, match="head and tail"):
        encoder(inputs, mask, head=positions)


def test_gradients_reach_relative_position_parameters():
    encoder = _encoder(dropout_prob=0.1, attention_dropout_prob=0.1).train()
    lattice, encoded = _encode(encoder, *_sources())
    # a random projection: LayerNorm outputs sum to a constant, so .sum() would give no gradient
    (encoded * torch.randn_like(encoded)).sum().backward()
    parameters = dict(encoder.named_parameters())
    for name in (
        "relative_position.fusion.weight",
        "relative_position.fusion.bias",
        "layers.0.attention.u",
        "layers.0.attention.v",
        "layers.0.attention.key_relative.weight",
        "layers.1.attention.u",
        "layers.1.attention.v",
        "layers.1.attention.key_relative.weight",
    ):
        gradient = parameters[name].grad
        assert gradient is not None and gradient.abs().sum() > 0, name
    # one fusion shared by all layers
    assert sum(1 for name in parameters if name.endswith("fusion.weight")) == 1


def test_from_params_and_registration():
    encoder = Seq2SeqEncoder.from_params(
        Params(
            {
                "type": "flat_lattice_transformer",
                "input_dim": 16,
                "num_layers": 1,
                "num_attention_heads": 4,
                "feedforward_hidden_dim": 24,
                "dropout_prob": 0.1,
                "attention_dropout_prob": 0.05,
                "max_distance": 64,
            }
        )
    )
    assert isinstance(encoder, FlatLatticeTransformer)
    assert len(encoder.layers) == 1
    assert encoder.layers[0].attention.num_heads == 4
    assert encoder.relative_position.max_distance == 64
    assert encoder.layers[0].feedforward[0].out_features == 24
    assert encoder(torch.randn(1, 3, 16)).shape == (1, 3, 16)


def test_heads_must_divide_input_dim():
    with pytest.raises(ConfigurationError):
        FlatLatticeTransformer(input_dim=16, num_attention_heads=3)
    with pytest.raises(ConfigurationError):
        Seq2SeqEncoder.from_params(
            Params({"type": "flat_lattice_transformer", "input_dim": 10, "num_attention_heads": 4})
        )


def test_interaction_parameter_count():
    d, ff, layers = 16, 32, 2
    per_layer = 5 * (d * d + d) + 2 * d + (d * ff + ff + ff * d + d) + 2 * 2 * d
    fusion = 4 * d * d + d
    count = interaction_parameter_count(
        hidden_dim=d, num_layers=layers, num_attention_heads=2, feedforward_hidden_dim=ff
    )
    assert count == layers * per_layer + fusion
    assert count == sum(p.numel() for p in _encoder(num_layers=layers).parameters())
    with_projection = interaction_parameter_count(
        hidden_dim=d,
        num_layers=layers,
        num_attention_heads=2,
        feedforward_hidden_dim=ff,
        text_dim=8,
        visual_dim=12,
    )
    assert with_projection - count == (8 * d + d) + (12 * d + d) + (d * d + d)
