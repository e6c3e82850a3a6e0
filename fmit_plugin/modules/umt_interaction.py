"""
UMT's multimodal interaction (Yu et al., ACL 2020, "Improving Multimodal Named Entity Recognition via
Entity Span Detection with Unified Multimodal Transformer", section 3.3), as a baseline encoder over
FMIT's flat lattice.
"""

from typing import Optional

import torch
from allennlp_light.modules.seq2seq_encoders import Seq2SeqEncoder
from tango.common.exceptions import ConfigurationError

__all__ = ["CrossAttentionLayer", "UmtInteraction"]


class CrossAttentionLayer(torch.nn.Module):
    """
    One cross-modal Transformer layer as UMT's `BertCrossAttentionLayer`: multi-head attention from
    `queries` to `keys` (keys are also the values), residual + LayerNorm, a GELU feed-forward, residual
    + LayerNorm (post-norm, as BERT). A query whose example has no key at all gets no attended value
    (the residual passes it through), instead of the NaN of a softmax over nothing.

    # Parameters

    hidden_dim : `int`
        Width of the queries, keys and output.
    num_heads : `int`
        Attention heads; must divide `hidden_dim`.
    feedforward_hidden_dim : `int`
        Inner dimension of the feed-forward network.
    dropout : `float`, optional (default = `0.1`)
        On the attention probabilities, the attention output and the feed-forward output.
    """

    def __init__(self, hidden_dim: int, num_heads: int, feedforward_hidden_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(hidden_dim, num_heads, dropout=dropout, batch_first=True)
        self.attention_norm = torch.nn.LayerNorm(hidden_dim)
        self.feedforward = torch.nn.Sequential(
            torch.nn.Linear(hidden_dim, feedforward_hidden_dim),
            torch.nn.GELU(),
            torch.nn.Linear(feedforward_hidden_dim, hidden_dim),
        )
        self.feedforward_norm = torch.nn.LayerNorm(hidden_dim)
        self.dropout = torch.nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """
        `queries` `(batch, queries, dim)`, `keys` `(batch, keys, dim)`, `key_mask` `(batch, keys)`
        (True for real keys; `keys >= 1`) -> `(batch, queries, dim)`.
        """
        # (batch,)
        has_keys = key_mask.any(dim=1)
        # Examples without keys attend to their first slot, and the result is zeroed below.
        padding = ~key_mask
        padding[:, 0] &= has_keys
        attended, _ = self.attention(queries, keys, keys, key_padding_mask=padding, need_weights=False)
        attended = attended * has_keys.view(-1, 1, 1).to(attended.dtype)
        hidden = self.attention_norm(queries + self.dropout(attended))
        return self.feedforward_norm(hidden + self.dropout(self.feedforward(hidden)))


def _pack(selected: torch.Tensor, read_size: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The cells a boolean `(batch, cells)` selects, packed to the left in their order: their cell
    indices `(batch, size)` and which of those slots are real `(batch, size)`, with `size` the
    largest count of the batch (at least 1) when `read_size`, else every cell (at least 1).
    `read_size` defaults to reading on the CPU only: the size sets tensor shapes, and reading it on
    an accelerator would make the host wait for every queued kernel.
    """
    # (batch,)
    count = selected.sum(dim=1)
    if read_size is None:
        read_size = selected.device.type == "cpu"
    size = max(1, min(int(count.max()), selected.size(1)) if read_size else selected.size(1))
    order = torch.argsort((~selected).long(), dim=1, stable=True)[:, :size]
    valid = torch.arange(size, device=selected.device).unsqueeze(0) < count.unsqueeze(1)
    return order, valid


def _gather_cells(inputs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    # (batch, cells, dim), (batch, size) -> (batch, size, dim)
    return inputs.gather(1, index.unsqueeze(-1).expand(-1, -1, inputs.size(-1)))


@Seq2SeqEncoder.register("umt_interaction")
class UmtInteraction(Seq2SeqEncoder):
    """
    The multimodal interaction module of UMT (Yu et al., ACL 2020), over the cells of FMIT's flat
    lattice, as the baseline FMIT's Table 3 compares its speed with. Text cells ([CLS], words,
    [SEP]) and visual cells (`visual_mask`) are separated and, at `hidden_dim`:

    1. the text goes through one more self-attention layer (UMT's `self_attention_v2`): `A`;
    2. text-to-image cross-attention (queries `A`, keys the visual cells projected by one linear map):
       the image-aware word representations `P`;
    3. image-to-text cross-attention (queries the visual cells projected by a second linear map,
       keys `A`): word-aware visual representations `Q`; then a text-to-text layer from `A` to `Q`:
       the visual-aware word representations `H`;
    4. the visual gate ``g = sigmoid(W_g [H; P] + b_g)``, ``B = g * P``;
    5. ``[H; B]`` is mapped back to `input_dim` by one linear layer (UMT feeds ``[H; B]`` to its
       classifier directly; a linear map before the tagger's linear emissions keeps that form while
       letting the model keep one lattice dimension).

    Every cross-modal layer is a full Transformer layer (attention, residual, LayerNorm, GELU
    feed-forward), one of each as in UMT's published configuration. Visual cells are returned as
    given (UMT computes no final representation of image regions) and padding cells are zero.
    Without `visual_mask` every real cell is text, and the cross-modal layers attend to nothing.
    UMT's entity span detection branch is not part of the interaction; the `fmit` model's entity
    boundary detection plays its role.

    Registered as a `Seq2SeqEncoder` with name "umt_interaction".

    # Parameters

    input_dim : `int`, optional (default = `768`)
        The lattice dimension d of the model, both input and output dimension.
    hidden_dim : `int`, optional (default = `768`)
        The interaction's width (BERT-base's, in UMT). Text cells are linearly projected to it when
        it differs from `input_dim`; visual cells always are (UMT's `vismap2text` maps).
    num_attention_heads : `int`, optional (default = `12`)
        Must divide `hidden_dim`.
    feedforward_hidden_dim : `int`, optional (default = `3072`)
        Inner dimension of every layer's feed-forward network (BERT-base's).
    dropout_prob : `float`, optional (default = `0.1`)
        Dropout on attention probabilities and on every layer's outputs, as BERT's config.
    """

    # Told which lattice cells are visual objects (see `flat_lattice.lattice_inputs_of`).
    lattice_inputs = ("visual_mask",)

    def __init__(
        self,
        input_dim: int = 768,
        hidden_dim: int = 768,
        num_attention_heads: int = 12,
        feedforward_hidden_dim: int = 3072,
        dropout_prob: float = 0.1,
    ) -> None:
        super().__init__()
        if num_attention_heads < 1 or hidden_dim % num_attention_heads != 0:
            raise ConfigurationError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        self._input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.text_projection: torch.nn.Module = (
            torch.nn.Identity() if input_dim == hidden_dim else torch.nn.Linear(input_dim, hidden_dim)
        )
        self.visual_key_projection = torch.nn.Linear(input_dim, hidden_dim)  # UMT's vismap2text
        self.visual_query_projection = torch.nn.Linear(input_dim, hidden_dim)  # UMT's vismap2text_v2
        self.text_self_attention = torch.nn.TransformerEncoderLayer(
            hidden_dim, num_attention_heads, feedforward_hidden_dim, dropout_prob, activation="gelu",
            batch_first=True,
        )
        self.text_to_image = CrossAttentionLayer(hidden_dim, num_attention_heads, feedforward_hidden_dim, dropout_prob)
        self.image_to_text = CrossAttentionLayer(hidden_dim, num_attention_heads, feedforward_hidden_dim, dropout_prob)
        self.text_to_text = CrossAttentionLayer(hidden_dim, num_attention_heads, feedforward_hidden_dim, dropout_prob)
        self.gate = torch.nn.Linear(2 * hidden_dim, hidden_dim)
        self.output = torch.nn.Linear(2 * hidden_dim, input_dim)

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
        visual_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        # Parameters

        inputs : `torch.Tensor`
            `(batch, cells, input_dim)`
        mask : `torch.BoolTensor`, optional
            `(batch, cells)`, True for real cells; `None` means all cells are real.
        visual_mask : `torch.BoolTensor`, optional
            `(batch, cells)`, True for visual object cells (see `FlatLattice.object_cell_mask`);
            `None` means there are none.

        # Returns

        `(batch, cells, input_dim)`: text cells interacted, visual cells as given, padding zero.
        """
        batch_size, num_cells, _ = inputs.shape
        if mask is None:
            mask = torch.ones(batch_size, num_cells, dtype=torch.bool, device=inputs.device)
        mask = mask.bool()
        if num_cells == 0:
            return inputs
        visual = mask & visual_mask.bool() if visual_mask is not None else torch.zeros_like(mask)
        text = mask & ~visual
        # The two modalities packed apart, so each layer runs on its own cells only.
        # (batch, texts), (batch, objects)
        text_index, text_valid = _pack(text)
        visual_index, visual_valid = _pack(visual)
        # (batch, texts, hidden)
        text_cells = self.text_projection(_gather_cells(inputs, text_index))
        # (batch, objects, input_dim)
        visual_cells = _gather_cells(inputs, visual_index)

        # (batch, texts, hidden)
        attended_text = self.text_self_attention(text_cells, src_key_padding_mask=~text_valid)
        # (batch, texts, hidden): P, image-aware word representations
        image_aware = self.text_to_image(attended_text, self.visual_key_projection(visual_cells), visual_valid)
        # (batch, objects, hidden): Q, word-aware visual representations
        word_aware = self.image_to_text(self.visual_query_projection(visual_cells), attended_text, text_valid)
        # (batch, texts, hidden): H, visual-aware word representations
        visual_aware = self.text_to_text(attended_text, word_aware, visual_valid)
        gate = torch.sigmoid(self.gate(torch.cat([visual_aware, image_aware], dim=-1)))
        # (batch, texts, input_dim)
        text_output = self.output(torch.cat([visual_aware, gate * image_aware], dim=-1))

        # Back to the cells: the k-th text cell of an example takes row k of `text_output`.
        # (batch, cells)
        text_rank = (text.long().cumsum(dim=1) - 1).clamp(0, text_index.size(1) - 1)
        scattered = _gather_cells(text_output, text_rank)
        visual_or_zero = inputs * visual.unsqueeze(-1).to(inputs.dtype)
        return torch.where(text.unsqueeze(-1), scattered, visual_or_zero)
