"""
Relative position encoding of the flat lattice (FMIT Eq 3-9, after FLAT, Li et al. 2020).
"""

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from tango.common.exceptions import ConfigurationError

__all__ = ["RelativePositionFusion", "sinusoid_table"]


def sinusoid_table(max_distance: int, dim: int) -> torch.Tensor:
    """
    Fixed sinusoid encodings (Eq 7-8) of every integer distance in ``[-max_distance, max_distance]``:
    `(2 * max_distance + 1, dim)`, row ``r`` encodes distance ``r - max_distance``, with
    ``P[2k] = sin(pos / 10000^(2k / dim))`` and ``P[2k + 1] = cos(pos / 10000^(2k / dim))``.
    """
    positions = torch.arange(-max_distance, max_distance + 1, dtype=torch.float).unsqueeze(1)
    # (ceil(dim / 2),)
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * (-math.log(10000.0) / dim))
    angles = positions * frequencies.unsqueeze(0)
    table = torch.zeros(2 * max_distance + 1, dim)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table


class RelativePositionFusion(torch.nn.Module):
    """
    The dense relative position encoding ``R_ij`` between every two lattice cells (Eq 3-9):

        d_hh = head_i - head_j, d_ht = head_i - tail_j, d_th = tail_i - head_j, d_tt = tail_i - tail_j
        R_ij = ReLU(W_r [P(d_hh); P(d_ht); P(d_th); P(d_tt)] + b)

    with ``P`` the fixed sinusoid encoding of dimension d. ``W_r`` is kept as one
    `torch.nn.Linear(4 d, d)` (`fusion`), so this is exactly the paper's parameterisation, but it is
    never applied to a `(batch, L, L, 4 d)` concatenation: `W_r` splits into four `d x d` blocks, and
    ``W_r,k P(x)`` only depends on the integer distance ``x``. So each block is applied once to the
    sinusoid table (one row per distance), and ``R_ij`` is the ReLU of a sum of four row lookups
    (a single `embedding_bag` with mode "sum"), which is what FLAT's own code spends most of its
    memory and time on.

    # Parameters

    hidden_dim : `int`
        The lattice dimension d (of both the sinusoid encodings and `R`).
    max_distance : `int`, optional (default = `512`)
        Distances are clamped to ``[-max_distance, max_distance]``.
    """

    def __init__(self, hidden_dim: int, max_distance: int = 512) -> None:
        super().__init__()
        if max_distance < 1:
            raise ConfigurationError(f"max_distance must be positive, got {max_distance}")
        self.hidden_dim = hidden_dim
        self.max_distance = max_distance
        # Fixed, so not saved in state dicts; rebuilt from the two ints above.
        self.sinusoids: torch.Tensor
        self.register_buffer("sinusoids", sinusoid_table(max_distance, hidden_dim), persistent=False)
        self.fusion = torch.nn.Linear(4 * hidden_dim, hidden_dim)  # W_r, b

    def distances(
        self, head: torch.Tensor, tail: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        The four clamped distance matrices ``(hh, ht, th, tt)``, each `(batch, cells, cells)`, Eq 3-6.
        """
        head_i, head_j = head.unsqueeze(-1), head.unsqueeze(-2)
        tail_i, tail_j = tail.unsqueeze(-1), tail.unsqueeze(-2)
        limit = self.max_distance
        return (
            (head_i - head_j).clamp(-limit, limit),
            (head_i - tail_j).clamp(-limit, limit),
            (tail_i - head_j).clamp(-limit, limit),
            (tail_i - tail_j).clamp(-limit, limit),
        )

    def reach(self, head: torch.Tensor, tail: torch.Tensor) -> int:
        """
        The largest distance the tables must cover for these cells (at most `max_distance`).
        """
        if head.device.type == "cpu" and head.numel() > 0:
            # Only distances within the batch's reach can occur; projecting just those rows of the
            # sinusoid table keeps the table product small on CPU, where reading the reach is free.
            reach = int((torch.maximum(head, tail).max() - torch.minimum(head, tail).min()).item())
            return min(max(reach, 0), self.max_distance)
        # On an accelerator reading it would stall the queue once per forward; projecting every
        # distance is cheap there.
        return self.max_distance

    def forward(self, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """
        `head`, `tail`: `(batch, cells)` integer positions -> `R`: `(batch, cells, cells, hidden_dim)`.
        """
        head = head.long()
        tail = tail.long()
        return self.fused(head, tail, self.reach(head, tail))

    def fused(self, head: torch.Tensor, tail: torch.Tensor, reach: int) -> torch.Tensor:
        """
        `forward` with the distances clamped to ``[-reach, reach]`` (``reach <= max_distance``): equal
        to `forward` for any `reach` at least the largest distance between two cells.
        """
        return self.lookup(self.tables(reach), reach, head, tail, head, tail)

    def tables(self, reach: int) -> torch.Tensor:
        """
        ``W_r,k P(x)`` for the four blocks ``k`` of `W_r` and every distance ``x`` in
        ``[-reach, reach]``, the bias folded into the first block: `(4 * (2 reach + 1), dim)`, row
        ``k * (2 reach + 1) + reach + x``. `R` of any two cells is the ReLU of a sum of four rows.
        """
        dim = self.hidden_dim
        # (2 reach + 1, dim)
        sinusoids = self.sinusoids[self.max_distance - reach : self.max_distance + reach + 1]
        sinusoids = sinusoids.to(self.fusion.weight.dtype)
        # W_r (dim, 4 dim) -> four (dim, dim) blocks, one per distance kind, each applied to every
        # distance: (4, 2 reach + 1, dim). Viewing W_r as (dim * 4, dim) (row = output * 4 + block)
        # makes that one product with the weight as it lies in memory (a permuted copy of W_r would
        # cost more than the product at tweet lengths). The bias b is folded into the first block's
        # rows, so one summing lookup gives W_r [P_hh; P_ht; P_th; P_tt] + b.
        products = F.linear(sinusoids, self.fusion.weight.reshape(dim * 4, dim))  # (2 reach + 1, dim * 4)
        tables = products.view(-1, dim, 4).permute(2, 0, 1)
        return torch.cat([tables[:1] + self.fusion.bias, tables[1:]], dim=0).reshape(-1, dim)

    def lookup(
        self,
        tables: torch.Tensor,
        reach: int,
        query_head: torch.Tensor,
        query_tail: torch.Tensor,
        key_head: torch.Tensor,
        key_tail: torch.Tensor,
    ) -> torch.Tensor:
        """
        `R` between the query cells `(batch, queries)` and the key cells `(batch, keys)`, given by
        their heads and tails, from `tables(reach)`: `(batch, queries, keys, dim)`.
        """
        batch_size, num_queries = query_head.shape
        num_keys = key_head.size(1)
        # (batch, cells, 4): the query cell's side (head, head, tail, tail) and the key cell's side
        # (head, tail, head, tail) of the four distances hh, ht, th, tt (Eq 3-6).
        query_side = torch.stack([query_head, query_head, query_tail, query_tail], dim=-1).long()
        key_side = torch.stack([key_head, key_tail, key_head, key_tail], dim=-1).long()
        # (batch, queries, keys, 4): the row of each distance in `tables`; clamping to `reach` also
        # clamps to `max_distance`, since reach <= max_distance.
        indices = (query_side.unsqueeze(2) - key_side.unsqueeze(1)).clamp_(-reach, reach)
        indices += torch.arange(4, device=indices.device) * (2 * reach + 1) + reach
        # (batch * queries * keys, dim); embedding_bag's backward does not need its output, so the
        # ReLU can be in place on this, the largest tensor of the module.
        relative = F.embedding_bag(indices.reshape(-1, 4), tables, mode="sum").relu_()
        return relative.view(batch_size, num_queries, num_keys, self.hidden_dim)

    def sequence(self, tables: torch.Tensor, reach: int, length: int) -> torch.Tensor:
        """
        `R` between two cells whose head equals their tail, for every distance from ``length - 1``
        down to ``-(length - 1)`` (clamped to ``[-reach, reach]``): `(2 length - 1, dim)`. Between
        such cells all four distances are the same ``x``, so `R` depends on ``x`` alone.
        """
        distances = torch.arange(length - 1, -length, -1, device=tables.device).clamp_(-reach, reach)
        indices = distances.unsqueeze(-1) + torch.arange(4, device=tables.device) * (2 * reach + 1) + reach
        return F.embedding_bag(indices, tables, mode="sum").relu_()

    def span_columns(
        self, tables: torch.Tensor, reach: int, spans: torch.Tensor, extent: int, rows: bool = False
    ) -> torch.Tensor:
        """
        `R` of a cell whose head equals its tail (a sequence cell, at position ``p``) with a cell of
        head ``h`` and tail ``h + s`` (`rows`: of the latter with the former), for every span ``s``
        of `spans` `(spans,)` and every ``x = p - h`` from ``-extent`` to ``extent``:
        `(spans, 2 extent + 1, dim)`. The four distances (hh, ht, th, tt) are ``x, x - s, x, x - s``
        (`rows`: ``-x, -x, s - x, s - x``), so `R` depends on ``(s, x)`` alone; each is clamped to
        ``[-reach, reach]``.
        """
        near = torch.arange(-extent, extent + 1, device=tables.device)
        far = near - spans.unsqueeze(-1)
        if rows:
            near, far = -near, -far
        far = far.clamp_(-reach, reach)
        near = near.clamp_(-reach, reach).expand_as(far)
        width = 2 * reach + 1
        # (spans, 2 extent + 1, 4): rows of the hh, ht, th, tt blocks of `tables`.
        kinds = [near, far, near, far] if not rows else [near, near, far, far]
        indices = torch.stack([kind + k * width for k, kind in enumerate(kinds)], dim=-1) + reach
        relative = F.embedding_bag(indices.reshape(-1, 4), tables, mode="sum").relu_()
        return relative.view(spans.size(0), 2 * extent + 1, self.hidden_dim)

    def naive_forward(self, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """
        The literal Eq 9: looks up four `(batch, cells, cells, d)` sinusoid encodings, concatenates
        them into `(batch, cells, cells, 4 d)` and applies `fusion`. Same parameters and result as
        `forward`, far more memory and time. Used ONLY by the tests and the speed benchmark, as the
        reference `forward` is checked against.
        """
        distances = self.distances(head.long(), tail.long())
        encodings = [self.sinusoids[distance + self.max_distance] for distance in distances]
        concatenated = torch.cat(encodings, dim=-1).to(self.fusion.weight.dtype)
        return torch.relu(self.fusion(concatenated))
