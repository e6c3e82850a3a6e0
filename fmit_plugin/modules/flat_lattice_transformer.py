"""
The Flat Multi-modal Interaction Transformer encoder (FMIT Eq 10-12, after FLAT and Transformer-XL).
"""

import math
from typing import Optional

import torch
from allennlp_light.modules.seq2seq_encoders import Seq2SeqEncoder
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules.flat_lattice import LatticeProjection
from fmit_plugin.modules.relative_position_fusion import RelativePositionFusion

__all__ = [
    "FlatLatticeTransformer",
    "FlatLatticeTransformerLayer",
    "RelativeMultiHeadAttention",
    "interaction_parameter_count",
]


class RelativeMultiHeadAttention(torch.nn.Module):
    """
    Multi-head self-attention with Transformer-XL relative position terms (Eq 10-12). Per head:

        A_ij = q_i . k_j + q_i . (W_kR R_ij) + u . k_j + v . (W_kR R_ij)
             = (q_i + u) . k_j + (q_i + v) . (W_kR R_ij)

    with ``q = E W_q``, ``k = E W_kE``, learnable per-head `u` and `v`, scaled by ``1 / sqrt(d_head)``,
    softmax over the (unmasked) key cells, values ``E W_v`` and the output projection ``W_t``.
    ``W_kR`` is applied to the query side (see `scores`), never to the `(batch, L, L, d)` `R`.

    # Parameters

    hidden_dim : `int`
        Width of the cells, input and output.
    num_heads : `int`
        Attention heads; must divide `hidden_dim`.
    attention_dropout : `float`, optional (default = `0.0`)
        Dropout on the attention probabilities.
    """

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

    def scores(self, inputs: torch.Tensor, relative: torch.Tensor) -> torch.Tensor:
        """
        The scaled attention logits ``A / sqrt(d_head)`` before masking, `(batch, heads, cells, cells)`,
        from `inputs` `(batch, cells, dim)` and the relative encodings `R` `(batch, cells, cells, dim)`.
        """
        # (batch, cells, heads, head_dim)
        query = self._split_heads(self.query(inputs))
        key = self._split_heads(self.key(inputs))
        # (batch, heads, cells, cells)
        content = torch.einsum("bihe,bjhe->bhij", query + self.u, key)
        # The position term (q_i + v) . (W_kR R_ij + b_kR) is computed as
        # (W_kR^T (q_i + v)) . R_ij + (q_i + v) . b_kR: the same numbers, but W_kR multiplies a
        # (batch, cells, heads, dim) tensor instead of the (batch, cells, cells, dim) R, which is
        # d_head times fewer multiplications and no projected copy of R per layer.
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

    def forward(self, inputs: torch.Tensor, relative: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        `inputs` `(batch, cells, dim)`, `relative` `(batch, cells, cells, dim)`, `mask` `(batch, cells)`
        -> `(batch, cells, dim)`.
        """
        scores = self.scores(inputs, relative)
        # Padding cells are hidden as keys, so they cannot influence real cells.
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

    def forward(self, inputs: torch.Tensor, relative: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`(batch, cells, dim)` -> `(batch, cells, dim)`."""
        hidden = self.attention_norm(inputs + self.dropout(self.attention(inputs, relative, mask)))
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
        batch_size, num_cells, _ = inputs.shape
        if mask is None:
            mask = torch.ones(batch_size, num_cells, dtype=torch.bool, device=inputs.device)
        mask = mask.bool()
        if head is None and tail is None:
            head = torch.arange(num_cells, device=inputs.device).unsqueeze(0).expand(batch_size, num_cells)
            tail = head
        elif head is None or tail is None:
            raise ValueError("give both head and tail, or neither")
        # (batch, cells, cells, dim), shared by all layers
        relative = self.relative_position(head, tail).to(inputs.dtype)
        hidden = inputs
        for layer in self.layers:
            hidden = layer(hidden, relative, mask)
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)


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
