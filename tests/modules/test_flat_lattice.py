import pytest
import torch
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules.flat_lattice import (
    FlatLattice,
    LatticeProjection,
    build_flat_lattice,
    lattice_inputs_of,
    word_cells,
)
from tests.host_reads import HostReads

DIM = 4


def _words(batch: int, words: int) -> torch.Tensor:
    # word i of example b is the constant vector 100 * b + i + 1, so every cell is recognisable
    values = 100 * torch.arange(batch).unsqueeze(1) + torch.arange(words).unsqueeze(0) + 1
    return values.unsqueeze(-1).expand(batch, words, DIM).double()


def _objects(batch: int, objects: int) -> torch.Tensor:
    return -_words(batch, objects)


CLS = torch.full((DIM,), 7777.0, dtype=torch.double)
SEP = torch.full((DIM,), 9999.0, dtype=torch.double)


def _example_batch():
    # example 0: 3 words, 2 objects; example 1: 2 words (one padding word), 1 object (one padding object)
    word_mask = torch.tensor([[True, True, True], [True, True, False]])
    object_mask = torch.tensor([[True, True], [True, False]])
    spans = torch.tensor([[[0, 1], [2, 2]], [[0, 1], [5, 9]]])  # the masked object's span is ignored
    return _words(2, 3), word_mask, _objects(2, 2), object_mask, spans


def _cell_values(lattice: FlatLattice) -> torch.Tensor:
    return lattice.embeddings[..., 0]


def test_layout_head_tail_and_mask():
    words, word_mask, objects, object_mask, spans = _example_batch()
    lattice = build_flat_lattice(words, word_mask, objects, object_mask, spans, CLS, SEP)

    assert lattice.embeddings.shape == (2, 7, DIM)
    expected_values = torch.tensor(
        [
            [7777, 1, 2, 3, 9999, -1, -2],
            [7777, 101, 102, 9999, -101, 0, 0],
        ],
        dtype=torch.double,
    )
    assert torch.equal(_cell_values(lattice), expected_values)
    # every dimension of a cell holds the same source vector
    assert torch.equal(lattice.embeddings, expected_values.unsqueeze(-1).expand(2, 7, DIM))
    assert lattice.mask.tolist() == [
        [True, True, True, True, True, True, True],
        [True, True, True, True, True, False, False],
    ]
    # [CLS] 0, word i -> i + 1, [SEP] n + 1, object (first, last) -> (first + 1, last + 1), padding 0
    assert lattice.head.tolist() == [[0, 1, 2, 3, 4, 1, 3], [0, 1, 2, 3, 1, 0, 0]]
    assert lattice.tail.tolist() == [[0, 1, 2, 3, 4, 2, 3], [0, 1, 2, 3, 2, 0, 0]]
    assert lattice.head.dtype == torch.long and lattice.mask.dtype == torch.bool
    assert lattice.max_words == 3
    assert lattice.object_cell_index.tolist() == [[5, 6], [4, 0]]


def test_word_and_object_outputs_are_recovered():
    words, word_mask, objects, object_mask, spans = _example_batch()
    lattice = build_flat_lattice(words, word_mask, objects, object_mask, spans, CLS, SEP)
    # an "encoder" that is the identity recovers its inputs from the cells
    encoded = lattice.embeddings
    expected_words = words * word_mask.unsqueeze(-1)
    assert torch.equal(lattice.word_outputs(encoded), expected_words)
    assert torch.equal(word_cells(encoded, 3)[word_mask], words[word_mask])
    assert torch.equal(lattice.object_outputs(encoded), objects * object_mask.unsqueeze(-1))


def test_object_cell_mask_marks_the_real_object_cells():
    words, word_mask, objects, object_mask, spans = _example_batch()
    lattice = build_flat_lattice(words, word_mask, objects, object_mask, spans, CLS, SEP)
    assert lattice.object_cell_mask().tolist() == [
        [False, False, False, False, False, True, True],
        [False, False, False, False, True, False, False],
    ]
    text_only = build_flat_lattice(words, word_mask, None, None, None, CLS, SEP)
    assert not text_only.object_cell_mask().any()


def test_padding_word_slots_beyond_the_longest_sentence_are_dropped():
    words = _words(2, 6)
    word_mask = torch.tensor(
        [[True, True, False, False, False, False], [True, False, False, False, False, False]]
    )
    lattice = build_flat_lattice(words, word_mask, None, None, None, CLS, SEP)
    assert lattice.embeddings.shape == (2, 4, DIM)
    assert _cell_values(lattice).tolist() == [[7777, 1, 2, 9999], [7777, 101, 9999, 0]]
    assert lattice.word_mask.tolist() == [[True, True], [True, False]]
    assert lattice.word_outputs(lattice.embeddings).shape == (2, 2, DIM)


def test_objects_are_packed_in_order_whatever_the_object_mask():
    words = _words(1, 2)
    word_mask = torch.ones(1, 2, dtype=torch.bool)
    objects = _objects(1, 3)
    object_mask = torch.tensor([[False, True, True]])
    spans = torch.tensor([[[0, 0], [1, 1], [0, 1]]])
    lattice = build_flat_lattice(words, word_mask, objects, object_mask, spans, CLS, SEP)
    assert _cell_values(lattice).tolist() == [[7777, 1, 2, 9999, -2, -3]]
    assert lattice.head.tolist() == [[0, 1, 2, 3, 2, 1]]
    assert lattice.tail.tolist() == [[0, 1, 2, 3, 2, 2]]
    assert lattice.object_cell_index.tolist() == [[0, 4, 5]]
    assert torch.equal(lattice.object_outputs(lattice.embeddings), objects * object_mask.unsqueeze(-1))


@pytest.mark.parametrize("no_objects", ["none", "empty", "all_masked"])
def test_text_only_lattice(no_objects):
    words = _words(2, 3)
    word_mask = torch.tensor([[True, True, True], [True, False, False]])
    if no_objects == "none":
        objects = mask = spans = None
    elif no_objects == "empty":
        objects, mask, spans = (
            _objects(2, 0),
            torch.zeros(2, 0, dtype=torch.bool),
            torch.zeros(2, 0, 2).long(),
        )
    else:
        objects, mask, spans = (
            _objects(2, 2),
            torch.zeros(2, 2, dtype=torch.bool),
            torch.zeros(2, 2, 2).long(),
        )
    lattice = build_flat_lattice(words, word_mask, objects, mask, spans, CLS, SEP)
    assert _cell_values(lattice).tolist() == [[7777, 1, 2, 3, 9999], [7777, 101, 9999, 0, 0]]
    assert lattice.head.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 0]]
    assert lattice.tail.tolist() == lattice.head.tolist()
    assert lattice.mask.tolist() == [[True] * 5, [True, True, True, False, False]]


def test_object_mask_defaults_to_all_real_and_whole_sentence_spans():
    words = _words(1, 3)
    word_mask = torch.ones(1, 3, dtype=torch.bool)
    # the whole image and the general-word objects span the whole sentence: (0, n - 1)
    spans = torch.tensor([[[0, 2], [0, 2]]])
    lattice = build_flat_lattice(words, word_mask, _objects(1, 2), None, spans, CLS, SEP)
    assert lattice.head.tolist() == [[0, 1, 2, 3, 4, 1, 1]]
    assert lattice.tail.tolist() == [[0, 1, 2, 3, 4, 3, 3]]


def test_per_example_special_embeddings():
    words, word_mask, objects, object_mask, spans = _example_batch()
    cls = torch.tensor([[1.5] * DIM, [2.5] * DIM], dtype=torch.double)
    lattice = build_flat_lattice(words, word_mask, objects, object_mask, spans, cls, SEP)
    assert _cell_values(lattice)[:, 0].tolist() == [1.5, 2.5]
    with pytest.raises(ValueError, match="cls_embedding"):
        build_flat_lattice(words, word_mask, objects, object_mask, spans, torch.zeros(DIM + 1), SEP)


@pytest.mark.parametrize("bad_span", [[0, 2], [-1, 0], [1, 0]])
def test_invalid_span_names_the_example(bad_span):
    words, word_mask, objects, object_mask, spans = _example_batch()
    spans[1, 0] = torch.tensor(bad_span)  # example 1 has 2 words
    with pytest.raises(ValueError, match="example 1, object 0"):
        build_flat_lattice(words, word_mask, objects, object_mask, spans, CLS, SEP)


def test_input_validation():
    words, word_mask, objects, object_mask, spans = _example_batch()
    with pytest.raises(ValueError, match="left-aligned"):
        build_flat_lattice(
            words, torch.tensor([[True, True, True], [False, True, True]]), None, None, None, CLS, SEP
        )
    with pytest.raises(ValueError, match="object_spans are required"):
        build_flat_lattice(words, word_mask, objects, object_mask, None, CLS, SEP)
    with pytest.raises(ValueError, match="object_spans must have shape"):
        build_flat_lattice(words, word_mask, objects, object_mask, spans[:, :1], CLS, SEP)
    with pytest.raises(ValueError, match="object_embeddings"):
        build_flat_lattice(words, word_mask, objects[..., :2], object_mask, spans, CLS, SEP)


def test_gradients_flow_to_every_source():
    words, word_mask, objects, object_mask, spans = _example_batch()
    words = words.clone().requires_grad_()
    objects = objects.clone().requires_grad_()
    cls = CLS.clone().requires_grad_()
    sep = SEP.clone().requires_grad_()
    lattice = build_flat_lattice(words, word_mask, objects, object_mask, spans, cls, sep)
    lattice.embeddings.sum().backward()
    assert words.grad is not None and objects.grad is not None
    # real words / objects get gradient 1 per dimension, padding ones none
    assert torch.equal(words.grad, word_mask.unsqueeze(-1).expand_as(words).double())
    assert torch.equal(objects.grad, object_mask.unsqueeze(-1).expand_as(objects).double())
    assert cls.grad is not None and torch.equal(cls.grad, torch.full((DIM,), 2.0, dtype=torch.double))
    assert sep.grad is not None and torch.equal(sep.grad, torch.full((DIM,), 2.0, dtype=torch.double))


def test_lattice_projection_matches_eq_1_and_2_with_shared_output():
    torch.manual_seed(0)
    projection = LatticeProjection(text_dim=6, visual_dim=10, hidden_dim=8)
    words = torch.randn(2, 3, 6)
    objects = torch.randn(2, 4, 10)
    projected_words, projected_objects = projection(words, objects)
    w0, b0 = projection.output.weight, projection.output.bias
    expected_words = (
        torch.relu(words @ projection.text_hidden.weight.T + projection.text_hidden.bias) @ w0.T + b0
    )
    expected_objects = (
        torch.relu(objects @ projection.visual_hidden.weight.T + projection.visual_hidden.bias) @ w0.T + b0
    )
    assert projected_objects is not None
    assert torch.allclose(projected_words, expected_words, atol=1e-6)
    assert torch.allclose(projected_objects, expected_objects, atol=1e-6)
    assert projection(words)[1] is None
    # W1, b1, W2, b2 and one shared W0, b0
    assert sum(p.numel() for p in projection.parameters()) == (6 * 8 + 8) + (10 * 8 + 8) + (8 * 8 + 8)


def test_without_reading_sizes_the_lattice_is_the_same_plus_padding_cells_and_reads_nothing():
    torch.manual_seed(0)
    words = torch.randn(3, 6, DIM, dtype=torch.double)
    word_mask = torch.arange(6).unsqueeze(0) < torch.tensor([[6], [2], [4]])
    objects = torch.randn(3, 3, DIM, dtype=torch.double)
    object_mask = torch.tensor([[False, False, False], [True, True, True], [True, False, True]])
    spans = torch.tensor([[[0, 5]] * 3, [[0, 0], [1, 1], [0, 1]], [[3, 3], [0, 9], [1, 2]]])
    exact = build_flat_lattice(words, word_mask, objects, object_mask, spans, CLS, SEP, read_sizes=True)
    with HostReads() as reads:
        bounded = build_flat_lattice(words, word_mask, objects, object_mask, spans, CLS, SEP, read_sizes=False)
    assert reads.seen == []
    cells = exact.mask.size(1)  # 6 words + 2, the longest example
    assert cells == 8 and bounded.mask.size(1) == 6 + 3 + 2
    for field in ("embeddings", "mask", "head", "tail"):
        assert torch.equal(getattr(bounded, field)[:, :cells], getattr(exact, field)), field
    assert not bounded.mask[:, cells:].any() and not bounded.embeddings[:, cells:].any()
    for field in ("word_mask", "object_mask", "object_cell_index"):
        assert torch.equal(getattr(bounded, field), getattr(exact, field)), field
    # On the CPU the sizes are read by default (and the inputs checked).
    default = build_flat_lattice(words, word_mask, objects, object_mask, spans, CLS, SEP)
    assert default.mask.size(1) == cells


class _PositionalEncoder(torch.nn.Module):
    """A user's own encoder that uses the cells' positions."""

    def forward(self, inputs, mask=None, head=None, tail=None):
        return inputs


class _DeclaredPositionalEncoder(_PositionalEncoder):
    lattice_inputs = ("head", "tail")


class _PlainEncoder(torch.nn.Module):
    def forward(self, inputs, mask=None):
        return inputs


def test_encoders_declare_what_they_take_from_the_lattice():
    from fmit_plugin.modules.flat_lattice_transformer import FlatLatticeTransformer
    from fmit_plugin.modules.umt_interaction import UmtInteraction

    assert lattice_inputs_of(FlatLatticeTransformer(input_dim=8, num_layers=1, num_attention_heads=2,
                                                    feedforward_hidden_dim=8)) == ("head", "tail")
    assert lattice_inputs_of(UmtInteraction(input_dim=8, hidden_dim=8, num_attention_heads=2,
                                            feedforward_hidden_dim=8)) == ("visual_mask",)
    assert lattice_inputs_of(_DeclaredPositionalEncoder()) == ("head", "tail")
    assert lattice_inputs_of(_PlainEncoder()) == ()  # any allennlp-light encoder: cells and mask only


def test_an_encoder_that_takes_positions_without_declaring_them_is_refused_not_run_without_them():
    with pytest.raises(ConfigurationError, match=r"_PositionalEncoder.forward takes head, tail .*`lattice_inputs = "
                                                 r"\('head', 'tail'\)"):
        lattice_inputs_of(_PositionalEncoder())


@pytest.mark.parametrize("declared, message", [
    (("head", "tail", "visual_mask"), "declares \\['visual_mask'\\], which _PositionalEncoder.forward does not take"),
    (("positions",), "names \\['positions'\\]; the lattice gives only"),
    (("head",), "both head and tail, or neither"),
])
def test_a_declaration_the_encoder_cannot_honour_is_refused(declared, message):
    encoder = _PositionalEncoder()
    encoder.lattice_inputs = declared
    with pytest.raises(ConfigurationError, match=message):
        lattice_inputs_of(encoder)
