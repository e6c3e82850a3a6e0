import math

import pytest
import torch
from tango.common.exceptions import ConfigurationError
from torch.utils._python_dispatch import TorchDispatchMode

from fmit_plugin.modules.relative_position_fusion import RelativePositionFusion, sinusoid_table


def _random_cells(batch: int, cells: int, max_position: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    head = torch.randint(0, max_position, (batch, cells), generator=generator)
    length = torch.randint(0, 4, (batch, cells), generator=generator)
    return head, head + length


def test_sinusoid_table_follows_eq_7_and_8():
    table = sinusoid_table(max_distance=5, dim=6)
    assert table.shape == (11, 6)
    for distance in (-5, -2, 0, 3, 5):
        row = table[distance + 5]
        for k in range(3):
            angle = distance / 10000 ** (2 * k / 6)
            assert math.isclose(row[2 * k].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(row[2 * k + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_sinusoid_table_odd_dimension():
    table = sinusoid_table(max_distance=2, dim=5)
    assert table.shape == (5, 5)
    assert torch.allclose(table[2], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))


def test_distances_are_eq_3_to_6_and_clamped():
    fusion = RelativePositionFusion(hidden_dim=4, max_distance=3)
    head = torch.tensor([[0, 1, 5, 2]])
    tail = torch.tensor([[0, 1, 6, 4]])
    hh, ht, th, tt = fusion.distances(head, tail)
    assert hh[0, 2, 0] == 3  # 5 - 0 clamped to 3
    assert ht[0, 1, 3] == 1 - 4
    assert th[0, 3, 1] == 4 - 1
    assert tt[0, 0, 2] == -3  # 0 - 6 clamped to -3
    assert torch.equal(hh, -hh.transpose(1, 2))


def test_gather_formulation_equals_naive_concatenation():
    torch.manual_seed(0)
    fusion = RelativePositionFusion(hidden_dim=16, max_distance=64).double()
    head, tail = _random_cells(batch=3, cells=9, max_position=30, seed=1)
    fast = fusion(head, tail)
    naive = fusion.naive_forward(head, tail)
    assert fast.shape == (3, 9, 9, 16)
    assert torch.allclose(fast, naive, atol=1e-10)
    # ReLU output, and not trivially all zero
    assert (fast >= 0).all() and (fast > 0).float().mean() > 0.2


def test_projecting_every_distance_gives_the_same_encodings():
    # What `forward` does on accelerators, where it does not read the batch's reach back.
    torch.manual_seed(0)
    fusion = RelativePositionFusion(hidden_dim=16, max_distance=64).double()
    head, tail = _random_cells(batch=3, cells=9, max_position=30, seed=3)
    assert torch.allclose(fusion.fused(head, tail, fusion.max_distance), fusion(head, tail), atol=1e-10)


class _LargestOutput(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in torch.utils._pytree.tree_leaves(result):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return result


def test_no_concatenated_l_l_4d_tensor_is_ever_materialised():
    fusion = RelativePositionFusion(hidden_dim=16, max_distance=64)
    head, tail = _random_cells(batch=2, cells=12, max_position=30, seed=4)
    relative_numel = 2 * 12 * 12 * 16
    for function, largest in ((fusion.forward, relative_numel), (fusion.naive_forward, 4 * relative_numel)):
        with _LargestOutput() as recorder:
            function(head, tail).sum().backward()
        assert recorder.largest == largest, function.__name__


def test_gather_equals_naive_when_distances_are_clamped():
    torch.manual_seed(0)
    fusion = RelativePositionFusion(hidden_dim=8, max_distance=4)
    head, tail = _random_cells(batch=2, cells=7, max_position=20, seed=2)
    assert torch.allclose(fusion(head, tail), fusion.naive_forward(head, tail), atol=1e-5)
    # far beyond max_distance all distances look the same
    far = torch.tensor([[0, 100]])
    farther = torch.tensor([[0, 300]])
    assert torch.allclose(fusion(far, far), fusion(farther, farther), atol=1e-6)


def test_gradients_of_both_formulations_agree():
    torch.manual_seed(0)
    fusion = RelativePositionFusion(hidden_dim=8, max_distance=16).double()
    head, tail = _random_cells(batch=2, cells=5, max_position=10, seed=3)
    weights = torch.randn(2, 5, 5, 8, dtype=torch.double)
    gradients = []
    for forward in (fusion.forward, fusion.naive_forward):
        fusion.zero_grad()
        (forward(head, tail) * weights).sum().backward()
        assert fusion.fusion.weight.grad is not None and fusion.fusion.bias.grad is not None
        gradients.append((fusion.fusion.weight.grad.clone(), fusion.fusion.bias.grad.clone()))
    assert torch.allclose(gradients[0][0], gradients[1][0], atol=1e-10)
    assert torch.allclose(gradients[0][1], gradients[1][1], atol=1e-10)


def test_parameters_are_one_linear_and_sinusoids_are_not_saved():
    fusion = RelativePositionFusion(hidden_dim=16, max_distance=32)
    names = {name: tuple(p.shape) for name, p in fusion.named_parameters()}
    assert names == {"fusion.weight": (16, 64), "fusion.bias": (16,)}
    assert set(fusion.state_dict()) == {"fusion.weight", "fusion.bias"}
    assert fusion.sinusoids.shape == (65, 16)


def test_depends_on_differences_only():
    torch.manual_seed(0)
    fusion = RelativePositionFusion(hidden_dim=8, max_distance=32)
    head, tail = _random_cells(batch=2, cells=6, max_position=10, seed=4)
    assert torch.allclose(fusion(head, tail), fusion(head + 7, tail + 7), atol=1e-6)


def test_single_cell_and_equal_positions():
    fusion = RelativePositionFusion(hidden_dim=8, max_distance=8)
    zeros = torch.zeros(2, 3, dtype=torch.long)
    relative = fusion(zeros, zeros)
    assert relative.shape == (2, 3, 3, 8)
    assert torch.allclose(relative, fusion.naive_forward(zeros, zeros), atol=1e-6)
    # all distances are 0, so every pair gets the same encoding
    assert torch.allclose(relative, relative[:1, :1, :1].expand_as(relative))


def test_rejects_a_non_positive_max_distance():
    with pytest.raises(ConfigurationError, match="max_distance must be positive, got 0"):
        RelativePositionFusion(hidden_dim=8, max_distance=0)


def test_lookup_of_blocks_equals_rows_and_columns_of_r():
    torch.manual_seed(0)
    fusion = RelativePositionFusion(hidden_dim=8, max_distance=6).double()
    head, tail = _random_cells(batch=2, cells=9, max_position=12, seed=5)
    full = fusion(head, tail)
    reach = fusion.reach(head, tail)
    tables = fusion.tables(reach)
    rows = torch.tensor([[4, 0], [8, 2]])
    row_head, row_tail = head.gather(1, rows), tail.gather(1, rows)
    block = fusion.lookup(tables, reach, row_head, row_tail, head, tail)
    assert block.shape == (2, 2, 9, 8)
    assert torch.allclose(block, full.gather(1, rows[..., None, None].expand(-1, -1, 9, 8)), atol=1e-12)
    columns = fusion.lookup(tables, reach, head, tail, row_head, row_tail)
    assert torch.allclose(columns, full.gather(2, rows[:, None, :, None].expand(-1, 9, -1, 8)), atol=1e-12)


def test_sequence_table_is_r_of_cells_whose_head_is_their_tail():
    torch.manual_seed(0)
    fusion = RelativePositionFusion(hidden_dim=8, max_distance=3).double()
    positions = torch.arange(6).unsqueeze(0)
    full = fusion(positions, positions)[0]
    table = fusion.sequence(fusion.tables(3), 3, 6)
    assert table.shape == (11, 8)
    for i in range(6):
        for j in range(6):
            # row r holds distance 5 - r; distances beyond 3 are clamped to 3 in both
            assert torch.allclose(table[5 - (i - j)], full[i, j], atol=1e-12)


@pytest.mark.parametrize("rows", [False, True])
def test_span_tables_are_r_of_a_sequence_cell_with_a_spanning_cell(rows):
    # A sequence cell at p (head = tail = p) and a cell spanning h .. h + s: R depends on (s, p - h).
    torch.manual_seed(0)
    fusion = RelativePositionFusion(hidden_dim=8, max_distance=4).double()
    spans = torch.tensor([0, 2, 5])
    extent = 9  # farther than max_distance: the distances are clamped one by one
    reach = fusion.reach(torch.tensor([[0, extent]]), torch.tensor([[0, extent]]))
    table = fusion.span_columns(fusion.tables(reach), reach, spans, extent, rows=rows)
    assert table.shape == (3, 2 * extent + 1, 8)
    for k, span in enumerate(spans.tolist()):
        for h in range(0, extent - span + 1, 3):
            for p in range(extent + 1):
                head = torch.tensor([[p, h]])
                tail = torch.tensor([[p, h + span]])
                full = fusion(head, tail)[0]
                expected = full[1, 0] if rows else full[0, 1]
                assert torch.allclose(table[k, p - h + extent], expected, atol=1e-12)
