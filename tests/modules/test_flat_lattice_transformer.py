import functools
import math

import pytest
import torch
from allennlp_light.modules.seq2seq_encoders import Seq2SeqEncoder
from tango.common import Params
from tango.common.exceptions import ConfigurationError
from torch.utils._python_dispatch import TorchDispatchMode

from fmit_plugin.modules.flat_lattice import build_flat_lattice
from fmit_plugin.modules.flat_lattice_transformer import (
    FlatLatticeTransformer,
    RelativePositions,
    interaction_parameter_count,
)

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


def _random_lattice(seed: int, batch: int = 3, max_words: int = 9, max_objects: int = 4, dim: int = DIM):
    """Lattices with padding words and objects, and object spans anywhere (single words included)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_words + 1, (batch,), generator=generator)
    lengths[0] = max_words
    word_mask = torch.arange(max_words) < lengths[:, None]
    object_counts = torch.randint(0, max_objects + 1, (batch,), generator=generator)
    object_counts[0] = max_objects
    object_mask = torch.arange(max_objects) < object_counts[:, None]
    first = (torch.rand(batch, max_objects, generator=generator) * lengths[:, None]).long()
    last = torch.minimum(first + torch.randint(0, 4, (batch, max_objects), generator=generator), lengths[:, None] - 1)
    words = torch.randn(batch, max_words, dim, generator=generator, dtype=torch.double)
    objects = torch.randn(batch, max_objects, dim, generator=generator, dtype=torch.double)
    cls = torch.randn(dim, generator=generator, dtype=torch.double)
    sep = torch.randn(dim, generator=generator, dtype=torch.double)
    return build_flat_lattice(words, word_mask, objects, object_mask, torch.stack([first, last], -1), cls, sep)


def _outputs_and_gradients(encoder, forward, lattice, head=None, tail=None):
    encoder.zero_grad()
    inputs = lattice.embeddings.clone().requires_grad_()
    head = lattice.head if head is None else head
    tail = lattice.tail if tail is None else tail
    encoded = forward(inputs, lattice.mask, head, tail)
    weights = torch.randn(encoded.shape, generator=torch.Generator().manual_seed(9), dtype=encoded.dtype)
    (encoded * weights).sum().backward()
    gradients = {name: p.grad.clone() for name, p in encoder.named_parameters()}
    return encoded.detach(), inputs.grad, gradients


def _literal_eq_9_and_10(encoder, inputs, mask, head, tail):
    """FMIT Eq 9-12 as written: the (L, L, 4d) concatenation through W_r, then per head
    A_ij = q_i k_j + q_i W_kR R_ij + u k_j + v W_kR R_ij, with W_kR applied to every R_ij."""
    relative = encoder.relative_position.naive_forward(head, tail).to(inputs.dtype)
    hidden = inputs
    for layer in encoder.layers:
        attention = layer.attention
        heads, head_dim = attention.num_heads, attention.head_dim
        split = attention._split_heads
        query, key, value = split(attention.query(hidden)), split(attention.key(hidden)), split(attention.value(hidden))
        relative_key = split(attention.key_relative(relative))  # (batch, cells, cells, heads, head_dim)
        scores = (
            torch.einsum("bihe,bjhe->bhij", query, key)
            + torch.einsum("bihe,bijhe->bhij", query, relative_key)
            + torch.einsum("he,bjhe->bhj", attention.u, key).unsqueeze(2)
            + torch.einsum("he,bijhe->bhij", attention.v, relative_key)
        ) / math.sqrt(head_dim)
        scores = scores.masked_fill(~mask[:, None, None, :], -math.inf)
        attended = torch.einsum("bhij,bjhe->bihe", torch.softmax(scores, dim=-1), value)
        attended = attention.output(attended.reshape(*hidden.shape[:-1], heads * head_dim))
        hidden = layer._feedforward(hidden, attended)
    return hidden * mask.unsqueeze(-1).to(hidden.dtype)


def _chunked(encoder, chunk_elements, chunk_rows=None, column_windows=None):
    """`encoder` with query chunks (and pieces of the objects' columns) of at most `chunk_elements` per
    tensor (None: as built) and at most `chunk_rows` rows, the objects' columns scored by windows of
    their table or by lookups as `column_windows` says (None: as built)."""
    for layer in encoder.layers:
        layer.attention.column_windows = column_windows
        if chunk_elements is not None:
            layer.attention.score_chunk_elements = chunk_elements
            layer.attention.column_chunk_elements = chunk_elements
        if chunk_rows is not None:
            layer.attention.score_chunk_rows = chunk_rows
    return encoder


# One chunk; chunks of two examples x 4 rows (the 3 x 15 cells of `_random_lattice` in chunks of
# 2 x 2 heads x 4 x (15 + 3) products: 2 + 1 examples, 4 + 4 + 4 + 3 rows); one example and a few
# rows per chunk; one row per chunk.
@pytest.mark.parametrize("column_windows", [None, True])
@pytest.mark.parametrize("chunks", [(None, None), (288, 4), (300, None), (1, None)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_equals_the_dense_formulation_and_literal_equations_with_gradients(chunks, seed, column_windows):
    # train() with dropout 0: the training path, deterministic; the objects' columns by lookups (as
    # built with a gradient) and by windows of their table.
    encoder = _chunked(_encoder(dropout_prob=0.0, max_distance=6).train(), *chunks, column_windows=column_windows)
    if chunks == (288, 4):
        assert encoder.layers[0].attention._chunk_shape(3, 15) == (2, 4)
    lattice = _random_lattice(seed)
    encoded, input_gradient, gradients = _outputs_and_gradients(encoder, encoder.forward, lattice)
    for reference in (encoder.dense_forward, functools.partial(_literal_eq_9_and_10, encoder)):
        expected, expected_input_gradient, expected_gradients = _outputs_and_gradients(encoder, reference, lattice)
        assert torch.allclose(encoded, expected, rtol=1e-10, atol=1e-10)
        assert torch.allclose(input_gradient, expected_input_gradient, rtol=1e-10, atol=1e-10)
        for name, gradient in gradients.items():
            assert torch.allclose(gradient, expected_gradients[name], rtol=1e-10, atol=1e-10), name
    assert (encoded[~lattice.mask] == 0).all()


@pytest.mark.parametrize("column_windows", [None, False])
@pytest.mark.parametrize("chunks", [(None, None), (2400, 8), (2000, None), (1, None)])
def test_float32_forward_matches_the_dense_formulation_to_1e_5(chunks, column_windows):
    # Without a gradient: the fused attention kernel, in one chunk, chunks of examples and rows, of
    # one example and some rows, of one row (every chunk reuses the buffer of the first); the
    # objects' columns by windows of their table (as built on CPU without a gradient) and by lookups.
    torch.manual_seed(0)
    encoder = _chunked(FlatLatticeTransformer(32, 2, 4, 64, dropout_prob=0.0).eval(), *chunks,
                       column_windows=column_windows)
    lattice = _random_lattice(3, batch=4, max_words=20, max_objects=6, dim=32)
    if chunks == (2400, 8):  # 4 heads x 8 x (28 + 7) products per example: 2 examples of 4 per chunk
        assert encoder.layers[0].attention._chunk_shape(4, 28) == (2, 8)
    inputs, mask = lattice.embeddings.float(), lattice.mask
    with torch.no_grad():
        fast = encoder(inputs, mask, lattice.head, lattice.tail)
        dense = encoder.dense_forward(inputs, mask, lattice.head, lattice.tail)
    assert torch.allclose(fast, dense, rtol=1e-5, atol=1e-5 * dense.abs().max().item())


@pytest.mark.parametrize("column_windows", [None, True])
@pytest.mark.parametrize("shift", ["shifted", "flipped", "plain"])
def test_other_positions_equal_the_dense_formulation(shift, column_windows):
    # Shifted positions keep the Toeplitz structure (an offset per example); flipped ones make every
    # cell special; a plain sequence has none.
    encoder = _chunked(_encoder(dropout_prob=0.0).train(), None, column_windows=column_windows)
    lattice = _random_lattice(4)
    head, tail = {
        "shifted": (lattice.head + 7, lattice.tail + 7),
        "flipped": (lattice.head.flip(1), lattice.tail.flip(1)),
        "plain": (None, None),
    }[shift]
    if shift == "plain":
        def fast(inputs, mask, head, tail):
            return encoder(inputs, mask)

        def dense(inputs, mask, head, tail):
            return encoder.dense_forward(inputs, mask)
    else:
        fast, dense = encoder.forward, encoder.dense_forward
    encoded, input_gradient, gradients = _outputs_and_gradients(encoder, fast, lattice, head, tail)
    expected, expected_input_gradient, expected_gradients = _outputs_and_gradients(encoder, dense, lattice, head, tail)
    assert torch.allclose(encoded, expected, atol=1e-10)
    assert torch.allclose(input_gradient, expected_input_gradient, atol=1e-10)
    for name, gradient in gradients.items():
        assert torch.allclose(gradient, expected_gradients[name], atol=1e-10), name


def test_special_cells_are_the_objects():
    encoder = _encoder()
    lattice = _random_lattice(5)
    objects = lattice.object_cell_mask()
    for head, tail in ((lattice.head, lattice.tail), (lattice.head + 11, lattice.tail + 11)):
        positions = RelativePositions.of(encoder.relative_position, head, tail, lattice.mask)
        count = int(objects.sum(1).max())
        assert positions.special_index.shape == (3, count)
        for example in range(3):
            index = positions.special_index[example].tolist()
            assert len(set(index)) == count  # distinct, so scattering by it writes each cell once
            real = objects[example].nonzero().flatten().tolist()
            assert index[: len(real)] == real
            assert not objects[example, index[len(real):]].any()
    plain = torch.arange(7).expand(2, 7)
    assert RelativePositions.of(encoder.relative_position, plain, plain, torch.ones(2, 7, dtype=torch.bool)
                                ).special_index.shape == (2, 0)


class _Shapes(TorchDispatchMode):
    """Records the shape of every tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in torch.utils._pytree.tree_leaves(result):
            if isinstance(value, torch.Tensor):
                self.shapes.append(tuple(value.shape))
        return result


def test_no_cells_by_cells_by_dim_tensor_and_chunks_bound_the_scores():
    torch.manual_seed(0)
    dim, heads = 64, 2
    encoder = FlatLatticeTransformer(dim, 2, heads, 32, dropout_prob=0.0).train()
    generator = torch.Generator().manual_seed(0)
    words, objects, batch = 30, 3, 2
    lattice = build_flat_lattice(
        torch.randn(batch, words, dim, generator=generator),
        torch.ones(batch, words, dtype=torch.bool),
        torch.randn(batch, objects, dim, generator=generator),
        torch.ones(batch, objects, dtype=torch.bool),
        torch.tensor([[[0, 2], [5, 5], [10, 29]]] * batch),
        torch.randn(dim, generator=generator),
        torch.randn(dim, generator=generator),
    )
    cells = lattice.embeddings.size(1)
    inputs = lattice.embeddings.requires_grad_()

    def pairs_of_cells(shapes: list[tuple[int, ...]], last: int) -> list[tuple[int, ...]]:
        """Shapes with (cells, cells) in front of a last dimension `last` (or reshaped so)."""
        return [s for s in shapes if s.count(cells) >= 2 and s[-1] == last
                or len(s) == 2 and s[0] == batch * cells * cells and s[1] == last]

    with _Shapes() as dense:
        encoder.dense_forward(inputs, lattice.mask, lattice.head, lattice.tail).sum().backward()
    assert pairs_of_cells(dense.shapes, dim)  # the recorder sees R where there is one
    with _Shapes() as built:
        encoder(inputs, lattice.mask, lattice.head, lattice.tail).sum().backward()
    assert not pairs_of_cells(built.shapes, dim)
    # As built, a chunk's position products weigh at most two layer inputs (2 x 35 x 64 elements):
    # one example's 35 rows x (35 + 34) per head, never the (heads, batch, cells, cells) scores.
    largest = max(math.prod(s) for s in pairs_of_cells(built.shapes, cells))
    assert largest <= heads * cells * (2 * cells - 1) <= 2 * inputs.numel()
    assert largest < heads * batch * cells * cells
    for layer in encoder.layers:
        layer.attention.score_chunk_inputs = 1000
    with _Shapes() as fast:
        encoder(inputs, lattice.mask, lattice.head, lattice.tail).sum().backward()
    assert not pairs_of_cells(fast.shapes, dim)
    assert pairs_of_cells(fast.shapes, cells)  # one chunk: the (batch, heads, cells, cells) scores
    _chunked(encoder, 1000)  # a few query rows per chunk
    with _Shapes() as chunked:
        encoder(inputs, lattice.mask, lattice.head, lattice.tail).sum().backward()
    # forward and backward: no scores of all cells with all cells
    assert not pairs_of_cells(chunked.shapes, cells)
    assert not pairs_of_cells(chunked.shapes, dim)


def test_state_dict_keys_are_those_of_existing_archives():
    encoder = _encoder(num_layers=1)
    layer = [
        "attention.u", "attention.v", "attention.query.weight", "attention.query.bias", "attention.key.weight",
        "attention.key.bias", "attention.key_relative.weight", "attention.key_relative.bias",
        "attention.value.weight", "attention.value.bias", "attention.output.weight", "attention.output.bias",
        "attention_norm.weight", "attention_norm.bias", "feedforward.0.weight", "feedforward.0.bias",
        "feedforward.3.weight", "feedforward.3.bias", "feedforward_norm.weight", "feedforward_norm.bias",
    ]
    expected = {"relative_position.fusion.weight", "relative_position.fusion.bias"} | {f"layers.0.{k}" for k in layer}
    assert set(encoder.state_dict()) == expected


@pytest.mark.parametrize("grad", [False, True])
def test_an_example_without_real_cells_leaves_the_others_unchanged(grad):
    # Its rows see only hidden keys: uniform weights, never NaN (a NaN times the zero mask is still
    # NaN, and would make the loss NaN).
    encoder = _encoder(dropout_prob=0.0)
    lattice = _random_lattice(6, batch=2)
    mask = lattice.mask.clone()
    mask[1] = False
    with torch.set_grad_enabled(grad):
        both = encoder(lattice.embeddings, mask, lattice.head, lattice.tail)
        alone = encoder(lattice.embeddings[:1], mask[:1], lattice.head[:1], lattice.tail[:1])
    assert torch.isfinite(both).all()
    assert (both[1] == 0).all()
    assert torch.allclose(both[:1], alone, atol=1e-10)


@pytest.mark.parametrize("shape", [(0, 7), (3, 0)])
def test_a_batch_without_examples_or_cells_gives_an_empty_output(shape):
    encoder = _encoder()
    inputs = torch.randn(*shape, DIM, dtype=torch.double, requires_grad=True)
    encoded = encoder(inputs)
    assert encoded.shape == inputs.shape
    encoded.sum().backward()
    assert inputs.grad is not None and inputs.grad.shape == inputs.shape


@pytest.mark.parametrize("grad", [False, True])
def test_objects_columns_by_windows_on_cpu_without_a_gradient_else_by_lookups(grad, monkeypatch):
    encoder = _encoder(dropout_prob=0.0).eval().float()
    lattice = _random_lattice(6)
    calls = {"windows": 0, "lookups": 0}
    attention = type(encoder.layers[0].attention)
    windows, lookups = attention._column_window_scores, attention._column_scores

    def counted(name, method):
        def call(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)
        return call

    monkeypatch.setattr(attention, "_column_window_scores", counted("windows", windows))
    monkeypatch.setattr(attention, "_column_scores", counted("lookups", lookups))
    with torch.set_grad_enabled(grad):
        encoder(lattice.embeddings.float(), lattice.mask, lattice.head, lattice.tail)
    # windows: once per layer; lookups: at least once per layer (per chunk and piece of rows)
    assert (calls["windows"] == len(encoder.layers)) is not grad
    assert (calls["lookups"] >= len(encoder.layers)) is grad
