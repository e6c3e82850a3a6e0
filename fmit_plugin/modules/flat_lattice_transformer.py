"""
The Flat Multi-modal Interaction Transformer encoder (FMIT Eq 10-12, after FLAT and Transformer-XL).
"""

import math
from typing import NamedTuple, Optional, Tuple, cast

import torch
import torch.nn.functional as F
from allennlp_light.modules.seq2seq_encoders import Seq2SeqEncoder
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules.flat_lattice import LatticeProjection
from fmit_plugin.modules.relative_position_fusion import RelativePositionFusion

__all__ = [
    "FlatLatticeTransformer",
    "FlatLatticeTransformerLayer",
    "RelativeMultiHeadAttention",
    "RelativePositions",
    "interaction_parameter_count",
]


class RelativePositions(NamedTuple):
    """
    What the attention of every layer needs of the cells' positions, computed once per forward (see
    `RelativePositions.of`), never the `(batch, cells, cells, dim)` `R`.

    A *sequence cell* has head = tail = its cell index plus a per-example offset (the [CLS], word
    and [SEP] cells of a flat lattice, or every cell of a plain sequence): between two of them all
    four distances equal ``i - j``, so ``R_ij`` is row ``i - j`` of `sequence` (a Toeplitz
    structure, as in Transformer-XL). Every other real cell (the visual objects) is *special*: its
    row and column of `R` with sequence cells come from per-span tables (`column_table`,
    `row_table`), with other special cells from `special_pairs`. Padding
    cells are neither: they are masked as keys and their outputs are discarded, so whatever
    position term they get is never seen.

    # Attributes

    fusion : `RelativePositionFusion`
    tables : `torch.Tensor`
        `fusion.tables(reach)`, `(4 * (2 reach + 1), dim)`.
    reach : `int`
    head, tail : `torch.LongTensor`
        `(batch, cells)`
    sequence : `torch.Tensor`
        `(2 cells - 1, dim)`, `R` of two sequence cells at distance ``cells - 1 - row``.
    special_index : `torch.LongTensor`
        `(batch, specials)`: each example's special cells, then (up to the batch's most) other cells
        of it, all distinct, so that scattering by it never writes a cell twice; an explicit `R` of
        a sequence cell equals its `sequence` row, so the filling cells get the same numbers.
    special_head, special_tail : `torch.LongTensor`
        `(batch, specials)`, the positions of those cells.
    column_table : `torch.Tensor`, optional
        `R` of a sequence cell with a special cell depends only on the special cell's span
        ``s = tail - head`` and on ``x = p - head`` (`RelativePositionFusion.span_columns`): this is
        `R` for the batch's distinct spans and every ``x``, `(spans, 2 extent + 1, dim)`, where
        `extent` is the largest distance of the batch's positions; `None` without special cells.
    column_index : `torch.LongTensor`, optional
        `(batch, cells, specials)`: the row of `column_table` (flattened over spans) of each cell
        with each special cell, as if the cell were a sequence cell (special and padding rows get
        a row that is in range, and are overwritten or discarded).
    row_table : `torch.Tensor`, optional
        The same for `R` of a special cell with a sequence cell (`span_columns(rows=True)`).
    special_pairs : `torch.Tensor`, optional
        `R` of the special cells with each other, `(batch, specials, specials, dim)`.
    first_hidden : `int`
        The first cell that is padding in some example (`cells` if none is): keys before it are
        never masked, so masking touches only the columns from it on (few, as padding is trailing).
    """

    fusion: RelativePositionFusion
    tables: torch.Tensor
    reach: int
    head: torch.Tensor
    tail: torch.Tensor
    sequence: torch.Tensor
    special_index: torch.Tensor
    special_head: torch.Tensor
    special_tail: torch.Tensor
    column_table: Optional[torch.Tensor]
    column_index: Optional[torch.Tensor]
    row_table: Optional[torch.Tensor]
    special_pairs: Optional[torch.Tensor]
    first_hidden: int

    @classmethod
    def of(
        cls,
        fusion: RelativePositionFusion,
        head: torch.Tensor,
        tail: torch.Tensor,
        mask: torch.Tensor,
        dtype: Optional[torch.dtype] = None,
    ) -> "RelativePositions":
        """The positions of cells `head` / `tail` `(batch, cells)` with `mask`, tables in `dtype`."""
        head, tail = head.long(), tail.long()
        num_cells = head.size(1)
        cell = torch.arange(num_cells, device=head.device)
        # (batch, cells): the offset is cell 0's head, [CLS]'s in a flat lattice.
        sequence_cell = (head == tail) & (head - cell == head[:, :1])
        special = mask & ~sequence_cell
        # One read-back per forward (not per layer): the number of special cells and the largest
        # distance between the batch's positions set the shapes.
        if num_cells:
            highest, lowest = torch.maximum(head, tail).max(), torch.minimum(head, tail).min()
            first_hidden_cell = torch.where(mask, num_cells, cell).min()
            num_special, extent, first_hidden = (int(value) for value in torch.stack(
                [special.sum(dim=1).max(), highest - lowest, first_hidden_cell]).tolist())
        else:
            num_special = extent = first_hidden = 0
        # Special cells first, then the others, each group in cell order.
        special_index = torch.argsort(torch.where(special, cell, cell + num_cells), dim=1)[:, :num_special]
        # Two sequence cells are never farther apart than `reach`; the `sequence` rows beyond it
        # (clamped) serve only pairs that are overwritten or masked.
        reach = fusion.reach(head, tail)
        tables = fusion.tables(reach)
        if dtype is not None:
            tables = tables.to(dtype)
        special_head, special_tail = head.gather(1, special_index), tail.gather(1, special_index)
        column_table = column_index = row_table = special_pairs = None
        if num_special:
            # (batch, specials): which of the distinct spans each special cell has
            spans, span_of = torch.unique(special_tail - special_head, return_inverse=True)
            column_table = fusion.span_columns(tables, reach, spans, extent)
            # (batch, cells, specials): row (span, x = head - special head) of the flat table
            column_index = (span_of * (2 * extent + 1)).unsqueeze(1) + (
                head.unsqueeze(2) - special_head.unsqueeze(1) + extent)
            row_table = fusion.span_columns(tables, reach, spans, extent, rows=True)
            special_pairs = fusion.lookup(tables, reach, special_head, special_tail, special_head, special_tail)
        return cls(
            fusion,
            tables,
            reach,
            head,
            tail,
            fusion.sequence(tables, reach, num_cells),
            special_index,
            special_head,
            special_tail,
            column_table,
            column_index,
            row_table,
            special_pairs,
            first_hidden,
        )

    def examples(self, examples: slice) -> "RelativePositions":
        """The positions of some examples of the batch (the tables are the batch's)."""

        def part(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if x is None else x[examples]

        return self._replace(
            head=self.head[examples],
            tail=self.tail[examples],
            special_index=self.special_index[examples],
            special_head=self.special_head[examples],
            special_tail=self.special_tail[examples],
            column_index=part(self.column_index),
            special_pairs=part(self.special_pairs),
        )


class RelativeMultiHeadAttention(torch.nn.Module):
    """
    Multi-head self-attention with Transformer-XL relative position terms (Eq 10-12). Per head:

        A_ij = q_i . k_j + q_i . (W_kR R_ij) + u . k_j + v . (W_kR R_ij)
             = (q_i + u) . k_j + (q_i + v) . (W_kR R_ij)

    with ``q = E W_q``, ``k = E W_kE``, learnable per-head `u` and `v`, scaled by ``1 / sqrt(d_head)``,
    softmax over the (unmasked) key cells, values ``E W_v`` and the output projection ``W_t``.

    `forward` never forms the `(batch, L, L, d)` `R` (see `RelativePositions`):

    * between two sequence cells, ``W_kR R_ij`` is row ``i - j`` of ``W_kR`` applied to the
      `(2 L - 1, d)` `sequence` table, so the position term is one product of the queries with that
      projected table followed by Transformer-XL's relative shift (views of it, no copy);
    * between a sequence cell and a special cell (either way round) `R` depends only on the
      special cell's span and the distance, so ``W_kR`` is applied to two small per-span tables
      (`RelativePositions.column_table` / `row_table`): the columns as a product of each
      example's queries with a window of the table per special cell (`column_windows`) or as one
      looked-up row per pair, the special rows (few) as a product with the whole table then a
      gather; the `(m x m)` block of special cells with each other from `R` of those pairs. These
      are written over the shifted scores;
    * the scale ``1 / sqrt(d_head)`` is applied to the queries, and everything per head is
      head-major `(heads, batch, ...)`, batched over heads x batch.

    Without a gradient the position scores are the additive mask of
    `torch.nn.functional.scaled_dot_product_attention`, which adds the content term itself (a fused
    kernel that never forms the probabilities; measured faster than the explicit softmax on CPU).
    With a gradient the kernel would fall back to the explicit computation anyway (its mask needs
    a gradient), so it is written out: content added in place to the position scores, softmax,
    values; each chunk keeps its probabilities for the backward pass, as plain attention does.

    The queries go in chunks of examples and rows whose position products stay under
    `score_chunk_elements` and `score_chunk_inputs` times the layer's input (rows rounded to the
    kernel's blocks of `kernel_rows`): temporaries that stay in the cache and are reused by the
    allocator rather than faulted in fresh, and a window of the table only as wide as the cells
    plus the chunk's rows. `dense_forward` is the `(batch, L, L, d)` formulation this replaced,
    kept as the reference the tests and the speed benchmark compare with.

    # Parameters

    hidden_dim : `int`
        Width of the cells, input and output.
    num_heads : `int`
        Attention heads; must divide `hidden_dim`.
    attention_dropout : `float`, optional (default = `0.0`)
        Dropout on the attention probabilities.
    """

    # Largest position products of one chunk (examples x query rows), in elements (16 MiB in
    # float32) and in the layer's inputs (batch x cells x dim elements each): small enough that a
    # chunk's products, scores, keys and values stay in a CPU's last-level cache between the
    # product and the attention kernel (chunks of all examples and 31 rows, as large, were 1.2x
    # slower at 1024 words: every chunk read all keys and values from memory again), and that the
    # attention never holds more than the feed-forward layer does (its hidden activations are four
    # inputs), so the layer's peak stays that of plain attention (measured, docs/speed.md). At most
    # `score_chunk_rows` rows: from 192 rows on the CPU kernel takes blocks of 64 rows, not 32.
    score_chunk_elements = 2**22
    score_chunk_inputs = 2
    score_chunk_rows = 256
    kernel_rows = 32
    # Largest lookup of the special cells' columns, in elements (4 MiB in float32) and in inputs:
    # pieces of a chunk's rows, so that it and its product weigh two inputs at any length.
    column_chunk_elements = 2**20
    column_chunk_inputs = 1

    # How the special cells' columns are scored: by windows of the per-span table, two small
    # operations per (example, special cell) pair (`_column_window_scores`), or by lookups of its
    # rows in chunks (`_column_scores`); None: windows on CPU without a gradient (the lookups copy
    # batch x cells x specials x dim numbers; FMIT's forward takes 0.96-1.00x their time from 32 to
    # 1024 words, docs/speed.md), lookups otherwise: with a gradient each window's backward would be
    # a zero tensor of the whole table, and an accelerator would launch 2 x batch x specials
    # kernels where the lookups take one.
    column_windows: Optional[bool] = None

    def __init__(self, hidden_dim: int, num_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_dim % num_heads != 0:
            raise ConfigurationError(
                f"hidden dimension ({hidden_dim}) must be divisible by the number of heads ({num_heads})"
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.query = torch.nn.Linear(hidden_dim, hidden_dim)  # W_q
        self.key = torch.nn.Linear(hidden_dim, hidden_dim)  # W_k,E
        self.key_relative = torch.nn.Linear(hidden_dim, hidden_dim)  # W_k,R
        self.value = torch.nn.Linear(hidden_dim, hidden_dim)  # W_v
        self.output = torch.nn.Linear(hidden_dim, hidden_dim)  # W_t
        # Transformer-XL's global content (u) and position (v) biases, one per head.
        self.u = torch.nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.v = torch.nn.Parameter(torch.empty(num_heads, self.head_dim))
        torch.nn.init.xavier_uniform_(self.u)
        torch.nn.init.xavier_uniform_(self.v)
        self.dropout = torch.nn.Dropout(attention_dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # (..., hidden_dim) -> (..., heads, head_dim)
        return x.view(*x.shape[:-1], self.num_heads, self.head_dim)

    def forward(self, inputs: torch.Tensor, positions: RelativePositions, mask: torch.Tensor) -> torch.Tensor:
        """
        `inputs` `(batch, cells, dim)`, `positions` of those cells, `mask` `(batch, cells)`
        -> `(batch, cells, dim)`.
        """
        batch_size, num_cells, _ = inputs.shape
        heads = self.num_heads
        scale = 1 / math.sqrt(self.head_dim)
        # (batch, cells, heads, head_dim)
        query = self._split_heads(self.query(inputs))
        # Everything per head is head-major, (heads, batch, cells, head_dim), so that the products
        # are batched over (heads x batch) and the per-distance table is shared by a head's batch.
        # The scale 1 / sqrt(d_head) goes on the queries, a (cells, dim) tensor, not on the scores.
        query_content = self._head_major(torch.add(query, self.u).mul_(scale))
        query_position = torch.add(query, self.v).mul_(scale)
        del query  # peak memory: only the layer's head-major tensors stay
        # (spans x (2 extent + 1), dim): W_kR R + b_kR of a sequence cell with a special cell, for
        # every span and distance.
        column_key = (
            self.key_relative(positions.column_table).flatten(0, 1) if positions.column_table is not None else None
        )
        # (heads, batch, cells, specials): the special cells' columns by windows of that table, else
        # each chunk looks its rows up (`_sequence_rows`).
        column_scores = None
        if column_key is not None and self._column_windows(inputs):
            column_scores = self._column_window_scores(query_position, column_key, positions)
        query_position = self._head_major(query_position)
        # (heads, batch, cells, head_dim), strided views: the attention kernel reads them so, and
        # the explicit softmax's products take each chunk of examples' contiguous (`_examples`).
        key = self._head_major(self._split_heads(self.key(inputs)), contiguous=False)
        value = self._head_major(self._split_heads(self.value(inputs)), contiguous=False)
        # (heads, 2 cells - 1, head_dim): W_kR R + b_kR for every sequence distance.
        sequence_key = self._split_heads(self.key_relative(positions.sequence)).transpose(0, 1)
        # Padding keys are hidden, so they cannot influence real cells: (1, batch, 1, cells - first
        # hidden), the columns from the first one that is padding somewhere (`mask` is the one
        # `positions` was made with).
        hidden_keys = ~mask.bool()[None, :, None, positions.first_hidden :]
        # (heads, spans x (2 extent + 1), head_dim): the same of a special cell with a sequence cell.
        row_key = None
        if positions.special_index.size(1):
            assert positions.row_table is not None
            row_key = self._split_heads(self.key_relative(positions.row_table).flatten(0, 1)).transpose(0, 1)
        examples_per_chunk, rows_per_chunk = self._chunk_shape(batch_size, num_cells)
        # Without a gradient every chunk's position products go to one buffer made once, as large
        # as the first (largest) chunk's, and its scores are a strided view of them: not fresh
        # tensors per chunk that the allocator keeps apart from each other (the process's memory
        # grew by half again at 1024 words) and the OS faults in anew. With a gradient each chunk's
        # scores stay for the backward pass.
        buffer = output = None
        if not torch.is_grad_enabled():
            buffer = query_position.new_empty(
                heads * examples_per_chunk * rows_per_chunk * (num_cells + rows_per_chunk - 1))
            if examples_per_chunk < batch_size or rows_per_chunk < num_cells:
                # (batch, cells, heads, head_dim): the chunks write their outputs into it through
                # its head-major view as they come, so that it needs no concatenation and no
                # permuted copy (1024 words: 0.92-0.97x the time), and no chunk's output is left
                # between the next chunk's temporaries in the heap. One chunk gets its permuted copy
                # once the buffer has gone (a lower peak). With a gradient the chunks are
                # concatenated: the backward of chunks written into one tensor would copy all of it
                # once per chunk.
                output = inputs.new_empty(batch_size, num_cells, heads, self.head_dim)
        # Chunks of examples, then of query rows within them: a chunk's keys and values (all of its
        # examples' cells) stay in the cache while its rows go through them. Split, not sliced one
        # by one: the backward of a split is one concatenation, that of each slice a zero tensor of
        # the whole.
        groups = [
            self._examples(content, position, group_key, group_value, sequence_key, column_key,
                           None if column_scores is None else column_scores[:, examples], row_key,
                           positions.examples(examples), hidden_keys[:, examples], rows_per_chunk, buffer,
                           None if output is None else output.permute(2, 0, 1, 3)[:, examples])
            for examples, content, position, group_key, group_value in zip(
                (slice(first, first + examples_per_chunk) for first in range(0, batch_size, examples_per_chunk)),
                *(x.split(examples_per_chunk, dim=1) for x in (query_content, query_position, key, value)),
            )
        ]
        del buffer  # peak memory: not held while the rest of the layer runs
        if output is not None:
            return self.output(output.view(batch_size, num_cells, self.hidden_dim))
        # (heads, batch, cells, head_dim), a fresh tensor; the chunks go as soon as it is made.
        attended = torch.cat(groups, dim=1) if len(groups) > 1 else groups[0]
        del groups
        return self.output(attended.permute(1, 2, 0, 3).reshape(batch_size, num_cells, self.hidden_dim))

    def _chunk_shape(self, batch_size: int, num_cells: int) -> Tuple[int, int]:
        """How many examples and query rows one chunk takes (see `score_chunk_elements`)."""
        budget = min(self.score_chunk_elements, self.score_chunk_inputs * batch_size * num_cells * self.hidden_dim)
        # Up to half as many rows again in one chunk rather than a short last one.
        rows = num_cells if 2 * num_cells <= 3 * self.score_chunk_rows else self.score_chunk_rows
        # (heads, rows, cells + rows - 1) position products per example
        per_example = self.num_heads * rows * (num_cells + rows - 1)
        if per_example <= budget:
            # As many examples in every chunk as the budget allows, spread evenly.
            chunks = -(-batch_size // max(1, budget // per_example))
            return -(-batch_size // chunks), rows
        # One example, fewer rows: ``rows (cells + rows - 1) <= budget / heads``, rows <= cells.
        rows = max(1, int((math.sqrt((num_cells - 1) ** 2 + 4 * budget / self.num_heads) - (num_cells - 1)) / 2))
        if rows >= self.kernel_rows:
            # The attention kernel takes query rows in blocks of 32 (on CPU): a chunk of 33 costs
            # as much as one of 64.
            rows -= rows % self.kernel_rows
        return 1, rows

    def _examples(
        self,
        query_content: torch.Tensor,
        query_position: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        sequence_key: torch.Tensor,
        column_key: Optional[torch.Tensor],
        column_scores: Optional[torch.Tensor],
        row_key: Optional[torch.Tensor],
        positions: RelativePositions,
        hidden_keys: torch.Tensor,
        rows_per_chunk: int,
        buffer: Optional[torch.Tensor],
        out: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """
        The attention output `(heads, batch, cells, head_dim)` of some examples, whose (scaled)
        queries, keys and values `(heads, batch, cells, head_dim)`, `positions` and `hidden_keys`
        these are, in chunks of `rows_per_chunk` query rows; `buffer` as in `forward`; written into
        `out` (a view of that shape) where given, else a fresh tensor.
        """
        heads, _, num_cells, head_dim = key.shape
        if torch.is_grad_enabled():
            # The explicit softmax's products need keys and values contiguous.
            key, value = key.contiguous(), value.contiguous()
        chunks = []
        for start, content, position in zip(
            range(0, num_cells, rows_per_chunk),
            query_content.split(rows_per_chunk, dim=2),
            query_position.split(rows_per_chunk, dim=2),
        ):
            chunk = self._sequence_rows(content, position, key, value, sequence_key, column_key, column_scores,
                                        positions, hidden_keys, start, buffer)
            if out is None:
                chunks.append(chunk)
            else:
                out[:, :, start : start + chunk.size(2)] = chunk
        if out is None:
            attended = torch.cat(chunks, dim=2) if len(chunks) > 1 else chunks[0]
        else:
            attended = out
        del chunks
        if row_key is not None:
            # (heads, batch, specials, head_dim)
            index = positions.special_index[None, :, :, None].expand(heads, -1, -1, head_dim)
            special = self._special_rows(query_content.gather(2, index), query_position.gather(2, index), key, value,
                                         row_key, positions, hidden_keys)
            attended.scatter_(2, index, special)
        return attended

    @staticmethod
    def _head_major(x: torch.Tensor, contiguous: bool = True) -> torch.Tensor:
        # (batch, cells, heads, head_dim) -> (heads, batch, cells, head_dim), contiguous or a view
        x = x.permute(2, 0, 1, 3)
        return x.contiguous() if contiguous else x

    def _attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        position: torch.Tensor,
        hidden_keys: torch.Tensor,
    ) -> torch.Tensor:
        """
        Softmax attention of the (scaled) queries `(heads, batch, rows, head_dim)` with the additive
        scaled position scores `position` `(heads, batch, rows, cells)`, a fresh tensor that is
        changed in place, and whether the last keys are padding, `hidden_keys` `(1, batch, 1, last)`
        -> `(heads, batch, rows, head_dim)`.
        """
        heads, batch_size, rows, num_cells = position.shape
        # The smallest float, not -inf: an example without any real cell gets uniform weights, not
        # NaN; adding a content score to it leaves it as it is.
        if hidden_keys.size(-1):
            position[..., num_cells - hidden_keys.size(-1) :].masked_fill_(hidden_keys, torch.finfo(position.dtype).min)
        dropout = self.dropout.p if self.training else 0.0
        if not torch.is_grad_enabled():
            # A fused kernel that adds the content term itself and never forms the probabilities:
            # measured faster than the explicit softmax below (docs/speed.md).
            return F.scaled_dot_product_attention(query, key, value, attn_mask=position, dropout_p=dropout,
                                                  scale=1.0)
        # With a gradient the kernel would fall back to this very computation (a mask with a
        # gradient), so it is written out: content plus position in place, softmax, values.
        scores = position.view(heads * batch_size, rows, num_cells).baddbmm_(
            query.reshape(heads * batch_size, rows, self.head_dim),
            key.view(heads * batch_size, num_cells, self.head_dim).transpose(1, 2),
        )
        probabilities = F.dropout(torch.softmax(scores, dim=-1), dropout, self.training)
        attended = torch.bmm(probabilities, value.view(heads * batch_size, num_cells, self.head_dim))
        return attended.view(heads, batch_size, rows, self.head_dim)

    def _position_scores(self, query_position: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        """
        ``(q_i + v) . (W_kR R_ij + b_kR)`` `(heads, batch, rows, keys)` for the (scaled) queries
        `(heads, batch, rows, head_dim)` and their looked-up `R` `(batch, rows, keys, dim)`, as
        ``(W_kR^T (q_i + v)) . R_ij + (q_i + v) . b_kR``: `W_kR` multiplies the queries, not `R`.
        """
        heads, batch_size, rows, _ = query_position.shape
        weight = self.key_relative.weight.view(heads, self.head_dim, self.hidden_dim)
        bias = self.key_relative.bias.view(heads, self.head_dim, 1)
        flat = query_position.reshape(heads, batch_size * rows, self.head_dim)
        # (heads, batch * rows, dim) -> (batch * rows, heads, dim), a strided view
        projected = torch.bmm(flat, weight).transpose(0, 1)
        # (batch * rows, heads, keys)
        scores = torch.bmm(projected, relative.reshape(batch_size * rows, -1, self.hidden_dim).transpose(1, 2))
        scores = scores.view(batch_size, rows, heads, -1).permute(2, 0, 1, 3)
        return scores + torch.bmm(flat, bias).view(heads, batch_size, rows, 1)

    def _column_scores(
        self, query_position: torch.Tensor, column_key: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        """
        ``(q_i + v) . (W_kR R_ij + b_kR)`` `(heads, batch, rows, specials)` of the (scaled) queries
        `(heads, batch, rows, head_dim)` with the projected per-span table `column_key` at `index`
        `(batch, rows, specials)`.
        """
        heads, batch_size, rows, head_dim = query_position.shape
        # (batch, rows, specials, heads, head_dim)
        relative_key = F.embedding(index, column_key).view(batch_size, rows, -1, heads, head_dim)
        # times (batch, rows, 1, heads, head_dim), summed -> (heads, batch, rows, specials)
        return (relative_key * query_position.permute(1, 2, 0, 3).unsqueeze(2)).sum(-1).permute(3, 0, 1, 2)

    def _column_windows(self, inputs: torch.Tensor) -> bool:
        """Whether the special cells' columns are scored by `_column_window_scores` (see `column_windows`)."""
        if self.column_windows is not None:
            return self.column_windows
        return inputs.device.type == "cpu" and not torch.is_grad_enabled()

    def _column_window_scores(
        self, query_position: torch.Tensor, column_key: torch.Tensor, positions: RelativePositions
    ) -> torch.Tensor:
        """
        ``(q_i + v) . (W_kR R_ij + b_kR)`` of every query row ``i``, taken as a sequence cell, with
        every special cell ``j``, `(heads, batch, cells, specials)`, from the (scaled) queries
        `(batch, cells, heads, head_dim)` and the projected per-span table `column_key`. A sequence
        cell's row of the table is cell 0's plus its cell index, so each (example, special cell)
        pair multiplies its queries with one contiguous window of the table, a view: no
        `(batch, rows, specials, dim)` lookup copied out of it. Rows past the table's end belong to
        special or padding cells (recomputed or discarded) and get 0.
        """
        batch_size, num_cells, heads, head_dim = query_position.shape
        assert positions.column_index is not None
        table_rows = column_key.size(0)
        # (batch, specials, cells, heads)
        scores = query_position.new_zeros(batch_size, positions.column_index.size(2), num_cells, heads)
        # One read-back of (batch x specials) numbers; this path runs on CPU only (`column_windows`).
        for example, offsets in enumerate(positions.column_index[:, 0].tolist()):
            for special, offset in enumerate(offsets):
                rows = min(num_cells, table_rows - offset)
                window = column_key[offset : offset + rows].view(rows, heads, head_dim)
                scores[example, special, :rows] = (query_position[example, :rows] * window).sum(-1)
        return scores.permute(3, 0, 2, 1)

    def _sequence_rows(
        self,
        query_content: torch.Tensor,
        query_position: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        sequence_key: torch.Tensor,
        column_key: Optional[torch.Tensor],
        column_scores: Optional[torch.Tensor],
        positions: RelativePositions,
        hidden_keys: torch.Tensor,
        start: int,
        buffer: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        The attention output `(heads, batch, rows, head_dim)` of query rows ``start .. start + rows``
        (`query_content` / `query_position` `(heads, batch, rows, head_dim)`) taken as sequence cells;
        `column_key` is ``W_kR R + b_kR`` of sequence cells with special cells, by span and distance;
        `buffer`, flat, holds the position products and scores where given (no gradient).
        """
        heads, batch_size, rows, head_dim = query_position.shape
        num_cells = key.size(2)
        stop = start + rows
        # Rows i of the chunk meet distances i - j from stop - 1 down to start - (cells - 1): a
        # window of the table, (heads, cells + rows - 1, head_dim).
        window = sequence_key[:, num_cells - stop : 2 * num_cells - 1 - start]
        width = window.size(1)
        # (heads, batch * rows, width), column c holding distance stop - 1 - c.
        product = (query_position.reshape(heads, batch_size * rows, head_dim), window.transpose(1, 2))
        if buffer is None:
            shifted = torch.bmm(*product)
        else:
            shifted = torch.bmm(*product, out=buffer[: heads * batch_size * rows * width].view(
                heads, batch_size * rows, width))
        # Transformer-XL's relative shift, as views: entry (i, j) is column rows - 1 - i + j, at
        # rows - 1 + i (width - 1) + j of a (heads x batch)'s flat rows x width scores. Slices and
        # views only, so their backward is a plain copy (an as_strided's is not). A single row
        # (width = cells) needs no shift.
        position = shifted.view(heads * batch_size, rows, width)
        if rows > 1:
            position = (
                shifted.view(heads * batch_size, rows * width)
                .narrow(1, rows - 1, rows * (width - 1))
                .view(heads * batch_size, rows, width - 1)[:, :, :num_cells]
            )
        # The (heads, batch, rows, cells) position scores: a fresh tensor (the explicit softmax's
        # products need it contiguous), or without a gradient the view of the buffer, written in
        # place (the attention kernel reads a mask with any row stride).
        if buffer is None:
            position = position.contiguous()
        position = position.view(heads, batch_size, rows, num_cells)
        # The columns of the special cells, written over: (q_i + v) . (W_kR R_ij + b_kR), from
        # `column_scores` where given, else with the projected R looked up by (span, distance), in
        # pieces of rows whose (batch, rows, specials, dim) lookups stay under
        # `column_chunk_elements` and `column_chunk_inputs`.
        columns = None
        if column_scores is not None:
            columns = column_scores[:, :, start:stop]
        elif column_key is not None and positions.column_index is not None:
            num_special = positions.column_index.size(2)
            input_elements = batch_size * num_cells * self.hidden_dim
            budget = min(self.column_chunk_elements, self.column_chunk_inputs * input_elements)
            step = max(1, budget // (batch_size * num_special * self.hidden_dim))
            pieces = [
                self._column_scores(piece, column_key, index)
                for piece, index in zip(query_position.split(step, dim=2),
                                        positions.column_index[:, start:stop].split(step, dim=1))
            ]
            # (heads, batch, rows, specials)
            columns = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
        if columns is not None:
            index = positions.special_index[None, :, None, :].expand(heads, -1, rows, -1)
            position.scatter_(3, index, columns)
        return self._attend(query_content, key, value, position, hidden_keys)

    def _special_rows(
        self,
        query_content: torch.Tensor,
        query_position: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        row_key: torch.Tensor,
        positions: RelativePositions,
        hidden_keys: torch.Tensor,
    ) -> torch.Tensor:
        """
        The attention output `(heads, batch, specials, head_dim)` of the special cells' rows
        (`query_content` / `query_position` `(heads, batch, specials, head_dim)`); `row_key`
        `(heads, spans x (2 extent + 1), head_dim)` is ``W_kR R + b_kR`` of a special cell with a
        sequence cell, by span and distance.
        """
        heads, batch_size, num_special, head_dim = query_position.shape
        assert positions.column_index is not None and positions.special_pairs is not None
        # Every special query with every row: (heads, batch x specials, spans x (2 extent + 1)), a
        # small product (specials are few), then each key's entry gathered as the columns are.
        every = torch.bmm(query_position.reshape(heads, batch_size * num_special, head_dim), row_key.transpose(1, 2))
        index = positions.column_index.transpose(1, 2).unsqueeze(0).expand(heads, -1, -1, -1)
        # (heads, batch, specials, cells), a fresh tensor
        position = every.view(heads, batch_size, num_special, -1).gather(3, index)
        # Keys that are special cells too: their own R, written over.
        index = positions.special_index[None, :, None, :].expand(heads, -1, num_special, -1)
        position.scatter_(3, index, self._position_scores(query_position, positions.special_pairs))
        return self._attend(query_content, key, value, position, hidden_keys)

    def scores(self, inputs: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        """
        `dense_forward`'s scaled attention logits ``A / sqrt(d_head)`` before masking,
        `(batch, heads, cells, cells)`, from `inputs` `(batch, cells, dim)` and the relative
        encodings `R` `(batch, cells, cells, dim)`.
        """
        # (batch, cells, heads, head_dim)
        query = self._split_heads(self.query(inputs))
        key = self._split_heads(self.key(inputs))
        # (batch, heads, cells, cells)
        content = torch.einsum("bihe,bjhe->bhij", query + self.u, key)
        # The position term (q_i + v) . (W_kR R_ij + b_kR) is computed as
        # (W_kR^T (q_i + v)) . R_ij + (q_i + v) . b_kR: the same numbers, but W_kR multiplies a
        # (batch, cells, heads, dim) tensor instead of the (batch, cells, cells, dim) R.
        query_position = query + self.v
        weight = self.key_relative.weight.view(self.num_heads, self.head_dim, self.hidden_dim)
        bias = self.key_relative.bias.view(self.num_heads, self.head_dim)
        # (batch, cells, heads, dim)
        projected_query = torch.einsum("bihe,hed->bihd", query_position, weight)
        batch_size, num_cells = inputs.shape[:2]
        # A batched product over (batch, query cell), written out because einsum would make a
        # permuted copy of R: (batch * cells, heads, dim) @ (batch * cells, dim, cells).
        position = torch.bmm(
            projected_query.reshape(batch_size * num_cells, self.num_heads, self.hidden_dim),
            relative.reshape(batch_size * num_cells, num_cells, self.hidden_dim).transpose(1, 2),
        )
        # (batch, heads, cells, cells)
        position = position.view(batch_size, num_cells, self.num_heads, num_cells).transpose(1, 2)
        position = position + torch.einsum("bihe,he->bhi", query_position, bias).unsqueeze(-1)
        return (content + position) / math.sqrt(self.head_dim)

    def dense_forward(self, inputs: torch.Tensor, relative: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        The formulation `forward` replaced, over the dense `R` `(batch, cells, cells, dim)`: the same
        parameters and results, memory quadratic in the cells times d. Used ONLY by the tests and
        the speed benchmark, as the reference `forward` is checked against.
        """
        scores = self.scores(inputs, relative)
        key_mask = mask.bool()[:, None, None, :]
        scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        probabilities = self.dropout(torch.softmax(scores, dim=-1))
        # (batch, cells, heads, head_dim)
        value = self._split_heads(self.value(inputs))
        attended = torch.einsum("bhij,bjhe->bihe", probabilities, value)
        return self.output(attended.reshape(*inputs.shape[:-1], self.hidden_dim))


class FlatLatticeTransformerLayer(torch.nn.Module):
    """
    One encoder layer: relative multi-head attention, residual + LayerNorm, position-wise
    feed-forward (ReLU), residual + LayerNorm (post-norm, as the vanilla Transformer and FLAT).

    # Parameters

    hidden_dim : `int`
        Width of the cells, input and output.
    num_heads : `int`
        Attention heads; must divide `hidden_dim`.
    feedforward_hidden_dim : `int`
        Inner dimension of the position-wise feed-forward network.
    dropout : `float`
        On the attention output, inside the feed-forward and on its output.
    attention_dropout : `float`
        On the attention probabilities.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        feedforward_hidden_dim: int,
        dropout: float = 0.2,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attention = RelativeMultiHeadAttention(hidden_dim, num_heads, attention_dropout)
        self.attention_norm = torch.nn.LayerNorm(hidden_dim)
        self.feedforward = torch.nn.Sequential(
            torch.nn.Linear(hidden_dim, feedforward_hidden_dim),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(feedforward_hidden_dim, hidden_dim),
        )
        self.feedforward_norm = torch.nn.LayerNorm(hidden_dim)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, inputs: torch.Tensor, positions: RelativePositions, mask: torch.Tensor) -> torch.Tensor:
        """`(batch, cells, dim)` -> `(batch, cells, dim)`."""
        return self._feedforward(inputs, self.attention(inputs, positions, mask))

    def dense_forward(self, inputs: torch.Tensor, relative: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`forward` over the dense `R` (`RelativeMultiHeadAttention.dense_forward`); a reference only."""
        return self._feedforward(inputs, self.attention.dense_forward(inputs, relative, mask))

    def _feedforward(self, inputs: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        hidden = self.attention_norm(inputs + self.dropout(attended))
        return self.feedforward_norm(hidden + self.dropout(self.feedforward(hidden)))


@Seq2SeqEncoder.register("flat_lattice_transformer")
class FlatLatticeTransformer(Seq2SeqEncoder):
    """
    The flat lattice Transformer encoder of FMIT (Lu et al., COLING 2022, section 3.2): a stack of
    Transformer layers whose self-attention sees the lattice structure only through the relative
    positions of the cells' heads and tails (Eq 3-12). The relative position encoding `R` is
    computed once per forward pass and shared by all layers, as in FLAT; each layer has its own
    attention parameters (`W_q`, `W_k,E`, `W_k,R`, `W_v`, `u`, `v`, `W_t`).

    The cell order carries no information: permuting cells together with their heads and tails
    permutes the outputs. Without `head` / `tail` it is a relative-position Transformer over a plain
    sequence (positions ``0 .. cells - 1``), which is how the entity boundary detection branch uses
    it over the text cells.

    # Parameters

    input_dim : `int`, optional (default = `512`)
        The lattice dimension d, both input and output dimension.
    num_layers : `int`, optional (default = `3`)
        The number of layers l (3 is the paper's best).
    num_attention_heads : `int`, optional (default = `8`)
        Must divide `input_dim`.
    feedforward_hidden_dim : `int`, optional (default = `2048`)
        The inner dimension of the position-wise feed-forward networks.
    dropout_prob : `float`, optional (default = `0.2`)
        Dropout on the attention outputs and in / after the feed-forward networks.
    attention_dropout_prob : `float`, optional (default = `0.0`)
        Dropout on the attention probabilities.
    max_distance : `int`, optional (default = `512`)
        Relative distances are clamped to ``[-max_distance, max_distance]``.

    Registered as a `Seq2SeqEncoder` with name "flat_lattice_transformer".
    """

    # The lattice positions FMIT hands this encoder (see `flat_lattice.lattice_inputs_of`).
    lattice_inputs = ("head", "tail")

    def __init__(
        self,
        input_dim: int = 512,
        num_layers: int = 3,
        num_attention_heads: int = 8,
        feedforward_hidden_dim: int = 2048,
        dropout_prob: float = 0.2,
        attention_dropout_prob: float = 0.0,
        max_distance: int = 512,
    ) -> None:
        super().__init__()
        if num_attention_heads < 1 or input_dim % num_attention_heads != 0:
            raise ConfigurationError(
                f"input_dim ({input_dim}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        if num_layers < 1:
            raise ConfigurationError(f"num_layers must be at least 1, got {num_layers}")
        self._input_dim = input_dim
        self.relative_position = RelativePositionFusion(input_dim, max_distance)
        self.layers = torch.nn.ModuleList(
            FlatLatticeTransformerLayer(
                input_dim, num_attention_heads, feedforward_hidden_dim, dropout_prob, attention_dropout_prob
            )
            for _ in range(num_layers)
        )

    def get_input_dim(self) -> int:
        return self._input_dim

    def get_output_dim(self) -> int:
        return self._input_dim

    def is_bidirectional(self) -> bool:
        return False

    def forward(
        self,
        inputs: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        head: Optional[torch.Tensor] = None,
        tail: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        # Parameters

        inputs : `torch.Tensor`
            `(batch, cells, dim)`
        mask : `torch.BoolTensor`, optional
            `(batch, cells)`, True for real cells; `None` means all cells are real.
        head, tail : `torch.LongTensor`, optional
            `(batch, cells)` positions of the cells (see `FlatLattice`); `None` uses
            ``0 .. cells - 1`` for both.

        # Returns

        `(batch, cells, dim)`; padding cells are zero.
        """
        mask, head, tail = self._positions(inputs, mask, head, tail)
        if not mask.numel():
            # No example or no cell: nothing to attend over (the positions' maxima would be over
            # nothing), and the output is as empty as the input (still in its graph, for a backward).
            return inputs * 0
        # Shared by all layers.
        positions = RelativePositions.of(self.relative_position, head, tail, mask, inputs.dtype)
        hidden = inputs
        for layer in self.layers:
            hidden = layer(hidden, positions, mask)
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)

    def dense_forward(
        self,
        inputs: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        head: Optional[torch.Tensor] = None,
        tail: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        `forward` as it was before, over the dense `R` `(batch, cells, cells, dim)` shared by all
        layers: the same parameters and results, memory quadratic in the cells times d. Used ONLY by
        the tests and the speed benchmark, as the reference `forward` is checked against.
        """
        mask, head, tail = self._positions(inputs, mask, head, tail)
        # (batch, cells, cells, dim)
        relative = self.relative_position(head, tail).to(inputs.dtype)
        hidden = inputs
        for layer in self.layers:
            hidden = cast(FlatLatticeTransformerLayer, layer).dense_forward(hidden, relative, mask)
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)

    @staticmethod
    def _positions(
        inputs: torch.Tensor, mask: Optional[torch.Tensor], head: Optional[torch.Tensor], tail: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch_size, num_cells, _ = inputs.shape
        if mask is None:
            mask = torch.ones(batch_size, num_cells, dtype=torch.bool, device=inputs.device)
        if head is None and tail is None:
            head = torch.arange(num_cells, device=inputs.device).unsqueeze(0).expand(batch_size, num_cells)
            tail = head
        elif head is None or tail is None:
            raise ValueError("give both head and tail, or neither")
        return mask.bool(), head, tail


def interaction_parameter_count(
    hidden_dim: int = 512,
    num_layers: int = 3,
    num_attention_heads: int = 8,
    feedforward_hidden_dim: int = 2048,
    max_distance: int = 512,
    text_dim: Optional[int] = None,
    visual_dim: Optional[int] = None,
) -> int:
    """
    The number of trainable parameters of FMIT's interaction phase, to compare with the paper's
    Table 3: the `FlatLatticeTransformer` (all layers and the relative position fusion `W_r`), plus
    the `LatticeProjection` (Eq 1-2) when both `text_dim` and `visual_dim` are given. The text
    encoder (BERT), the visual backbone, the CRF and the entity boundary detection branch are not
    counted. Built on the meta device, so nothing is allocated.
    """
    with torch.device("meta"):
        modules: list[torch.nn.Module] = [
            FlatLatticeTransformer(
                input_dim=hidden_dim,
                num_layers=num_layers,
                num_attention_heads=num_attention_heads,
                feedforward_hidden_dim=feedforward_hidden_dim,
                max_distance=max_distance,
            )
        ]
        if text_dim is not None and visual_dim is not None:
            modules.append(LatticeProjection(text_dim, visual_dim, hidden_dim))
    return sum(p.numel() for module in modules for p in module.parameters() if p.requires_grad)
