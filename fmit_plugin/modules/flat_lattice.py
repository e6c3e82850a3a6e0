"""
The unified flat lattice of FMIT (Lu et al., COLING 2022, section 3.1).

Words and visual objects are projected to one space (Eq 1-2, `LatticeProjection`) and flattened into
one sequence of cells ``E = [CLS], x_1 .. x_n, [SEP], v_1 .. v_m`` (`build_flat_lattice`). Each cell
carries a head and a tail position; the relative position encoding of the encoder only ever looks at
differences of those, so the order of the cells themselves carries no information.
"""

import inspect
from typing import NamedTuple, Optional, Tuple

import torch
from tango.common.exceptions import ConfigurationError

__all__ = [
    "LATTICE_INPUTS", "FlatLattice", "LatticeProjection", "build_flat_lattice", "lattice_inputs_of", "word_cells",
]

# What an encoder over the lattice may take beside its cells and mask: the cells' `head` / `tail`
# positions (the flat lattice transformer) and `visual_mask`, which cells are visual objects (UMT).
LATTICE_INPUTS = ("head", "tail", "visual_mask")


def lattice_inputs_of(encoder: torch.nn.Module) -> tuple[str, ...]:
    """
    The lattice inputs an encoder takes, as it declares them in its class attribute
    `lattice_inputs` (e.g. `("head", "tail")`); an encoder that declares none (any allennlp-light
    `Seq2SeqEncoder`) gets the cells and the mask only, which is the paper's "w/o Rel" row.

    Declared, not guessed from `forward`'s signature: an encoder whose `forward` takes `head` /
    `tail` without declaring them is a configuration error rather than an encoder silently run
    without its positions; so is a declared input that `forward` does not take.
    """
    name = type(encoder).__name__
    accepted = [p for p in inspect.signature(encoder.forward).parameters if p in LATTICE_INPUTS]
    declared = getattr(encoder, "lattice_inputs", None)
    if declared is None:
        if accepted:
            raise ConfigurationError(
                f"{name}.forward takes {', '.join(accepted)} but {name} does not declare `lattice_inputs`, so it "
                f"would run without them: set the class attribute `lattice_inputs = {tuple(accepted)!r}` (the "
                f"inputs it uses, of {LATTICE_INPUTS}), or `()` to run it over the cells only"
            )
        return ()
    declared = tuple(declared)
    unknown = [i for i in declared if i not in LATTICE_INPUTS]
    if unknown:
        raise ConfigurationError(f"{name}.lattice_inputs names {unknown}; the lattice gives only {LATTICE_INPUTS}")
    missing = [i for i in declared if i not in accepted]
    if missing:
        raise ConfigurationError(
            f"{name}.lattice_inputs declares {missing}, which {name}.forward does not take as keyword arguments"
        )
    if ("head" in declared) != ("tail" in declared):
        raise ConfigurationError(f"{name}.lattice_inputs must declare both head and tail, or neither: {declared}")
    return declared


class FlatLattice(NamedTuple):
    """
    A batch of flat lattices, as built by `build_flat_lattice`.

    Every example is packed contiguously from cell 0: ``[CLS] w_1 .. w_n [SEP] o_1 .. o_m PAD ..``,
    so word ``i`` (0-based) of every example sits at cell ``1 + i`` and the word outputs of an encoder
    are ``encoded[:, 1 : 1 + max_words]`` (see `word_outputs` / `word_cells`).

    Head / tail convention (1-based word positions, so that [CLS] can be 0, as BERT / FLAT positions):

    * [CLS]: head = tail = 0
    * word ``i`` (0-based): head = tail = ``i + 1``
    * [SEP]: head = tail = ``n + 1``
    * object with inclusive word span ``(first, last)``: head = ``first + 1``, tail = ``last + 1``
    * padding cells: head = tail = 0 (they are masked out as attention keys, so the value is irrelevant)

    # Attributes

    embeddings : `torch.Tensor`
        `(batch, cells, dim)`, padding cells are zero.
    mask : `torch.BoolTensor`
        `(batch, cells)`, True for real cells ([CLS], words, [SEP], objects).
    head : `torch.LongTensor`
        `(batch, cells)`
    tail : `torch.LongTensor`
        `(batch, cells)`
    word_mask : `torch.BoolTensor`
        `(batch, max_words)`, the word mask cut to the longest sentence of the batch; it masks the
        output of `word_outputs`.
    object_mask : `torch.BoolTensor`
        `(batch, objects)`, the given object mask (`(batch, 0)` when there are no objects).
    object_cell_index : `torch.LongTensor`
        `(batch, objects)`, the cell of every object in its original order (0 for masked objects);
        used by `object_outputs`.
    """

    embeddings: torch.Tensor  # (batch, cells, dim)
    mask: torch.Tensor  # (batch, cells)
    head: torch.Tensor  # (batch, cells)
    tail: torch.Tensor  # (batch, cells)
    word_mask: torch.Tensor  # (batch, max_words)
    object_mask: torch.Tensor  # (batch, objects)
    object_cell_index: torch.Tensor  # (batch, objects)

    @property
    def max_words(self) -> int:
        return self.word_mask.size(1)

    def word_outputs(self, encoded: torch.Tensor) -> torch.Tensor:
        """
        The outputs of the word cells, `(batch, max_words, dim)`, zero where `word_mask` is False.
        """
        return word_cells(encoded, self.max_words) * self.word_mask.unsqueeze(-1).to(encoded.dtype)

    def object_cell_mask(self) -> torch.Tensor:
        """
        `(batch, cells)`, True for the cells holding visual objects (cells ``n + 2 ..`` of a real
        example): the modality of each cell, for encoders that treat the two apart.
        """
        # (batch, 1): the first object cell, after [CLS], the n words and [SEP]
        first_object = self.word_mask.sum(dim=1, keepdim=True) + 2
        cell = torch.arange(self.mask.size(1), device=self.mask.device).unsqueeze(0)
        return self.mask & (cell >= first_object)

    def object_outputs(self, encoded: torch.Tensor) -> torch.Tensor:
        """
        The outputs of the object cells in the objects' original order, `(batch, objects, dim)`,
        zero where `object_mask` is False.
        """
        index = self.object_cell_index.unsqueeze(-1).expand(-1, -1, encoded.size(-1))
        # (batch, objects, dim)
        gathered = encoded.gather(1, index)
        return gathered * self.object_mask.unsqueeze(-1).to(encoded.dtype)


def word_cells(encoded: torch.Tensor, max_words: int) -> torch.Tensor:
    """
    Cells ``1 .. max_words`` of an encoded flat lattice `(batch, cells, dim)`: the word outputs
    `(batch, max_words, dim)`, to be masked with the word mask (padding words hold other cells).
    """
    return encoded[:, 1 : 1 + max_words]


def _broadcast_special(embedding: torch.Tensor, batch_size: int, dim: int, name: str) -> torch.Tensor:
    # [CLS] / [SEP] may be one learned vector (dim,) or a per-example vector (batch, dim), e.g. the
    # projected BERT [CLS] / [SEP] outputs.
    if embedding.dim() == 1 and embedding.size(0) == dim:
        return embedding.unsqueeze(0).expand(batch_size, dim)
    if embedding.dim() == 2 and tuple(embedding.shape) == (batch_size, dim):
        return embedding
    raise ValueError(
        f"{name} must have shape ({dim},) or ({batch_size}, {dim}), got {tuple(embedding.shape)}"
    )


def _bad_spans(object_spans: torch.Tensor, object_mask: torch.Tensor, num_words: torch.Tensor) -> torch.Tensor:
    """`(batch, objects)`, True for real objects whose span is not inside their sentence."""
    first = object_spans[..., 0]
    last = object_spans[..., 1]
    return object_mask & ((first < 0) | (last >= num_words.unsqueeze(1)) | (first > last))


def _raise_for_span(bad: torch.Tensor, object_spans: torch.Tensor, num_words: torch.Tensor) -> None:
    first = object_spans[..., 0]
    last = object_spans[..., 1]
    if bool(bad.any()):
        example, obj = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"Invalid object span in example {example}, object {obj}: "
            f"({int(first[example, obj])}, {int(last[example, obj])}) with a sentence of "
            f"{int(num_words[example])} words; spans are inclusive 0-based word indices "
            "(first, last) with 0 <= first <= last < number of words."
        )


def build_flat_lattice(
    word_embeddings: torch.Tensor,
    word_mask: torch.Tensor,
    object_embeddings: Optional[torch.Tensor],
    object_mask: Optional[torch.Tensor],
    object_spans: Optional[torch.Tensor],
    cls_embedding: torch.Tensor,
    sep_embedding: torch.Tensor,
    read_sizes: Optional[bool] = None,
) -> FlatLattice:
    """
    Flattens words and visual objects into one lattice per example,
    ``[CLS] w_1 .. w_n [SEP] o_1 .. o_m PAD ..``, with head / tail positions as documented on
    `FlatLattice` (1-based word positions; [CLS] = 0, [SEP] = n + 1, an object spans its words).

    Built with one gather over all sources, no loop over cells or examples, so gradients flow to
    every input.

    # Parameters

    word_embeddings : `torch.Tensor`
        `(batch, words, dim)`
    word_mask : `torch.BoolTensor`
        `(batch, words)`; must be left-aligned (the real words of each example come first).
    object_embeddings : `torch.Tensor`, optional
        `(batch, objects, dim)`; `None` (or `objects == 0`) gives a text-only lattice.
    object_mask : `torch.BoolTensor`, optional
        `(batch, objects)`; any pattern is allowed, masked objects are dropped. `None` means all
        objects are real.
    object_spans : `torch.LongTensor`, optional
        `(batch, objects, 2)`, inclusive 0-based word indices ``(first word, last word)``. The paper
        gives the whole image and the general-word objects the span of the whole sentence,
        ``(0, n - 1)``; that choice belongs to the caller.
    cls_embedding : `torch.Tensor`
        `(dim,)` or `(batch, dim)`
    sep_embedding : `torch.Tensor`
        `(dim,)` or `(batch, dim)`
    read_sizes : `bool`, optional (default = `None`)
        Whether to read the sizes of the inputs back to the host (one read): the lattice is then as
        long as its longest example and the inputs are checked (the errors below). Without the read
        it is ``words + objects + 2`` cells long, the length the input shapes allow (extra cells are
        padding), the inputs are not checked, and the host never waits for the device here. `None`:
        read on the CPU, where reading is free; not on an accelerator, where the read would make the
        host wait for every queued kernel (the reader checks the spans where it makes them).

    # Returns

    `FlatLattice` with `cells = max over the batch of (n + m + 2)`.

    # Raises

    `ValueError` for mismatched shapes, a word mask that is not left-aligned, or an object span
    outside its sentence or with first > last (naming the example).
    """
    if word_embeddings.dim() != 3:
        raise ValueError(f"word_embeddings must be (batch, words, dim), got {tuple(word_embeddings.shape)}")
    batch_size, num_word_slots, dim = word_embeddings.shape
    device = word_embeddings.device
    word_mask = word_mask.bool()
    if tuple(word_mask.shape) != (batch_size, num_word_slots):
        raise ValueError(
            f"word_mask must have shape {(batch_size, num_word_slots)}, got {tuple(word_mask.shape)}"
        )
    # (batch,)
    num_words = word_mask.sum(dim=1)

    if object_embeddings is None or object_embeddings.size(1) == 0:
        object_embeddings = word_embeddings.new_zeros(batch_size, 0, dim)
        object_mask = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        object_spans = torch.zeros(batch_size, 0, 2, dtype=torch.long, device=device)
    else:
        num_object_slots = object_embeddings.size(1)
        if object_embeddings.dim() != 3 or tuple(object_embeddings.shape) != (
            batch_size,
            num_object_slots,
            dim,
        ):
            raise ValueError(
                f"object_embeddings must have shape ({batch_size}, objects, {dim}), "
                f"got {tuple(object_embeddings.shape)}"
            )
        if object_spans is None:
            raise ValueError("object_spans are required when object_embeddings are given")
        if tuple(object_spans.shape) != (batch_size, num_object_slots, 2):
            raise ValueError(
                f"object_spans must have shape {(batch_size, num_object_slots, 2)}, "
                f"got {tuple(object_spans.shape)}"
            )
        if object_mask is None:
            object_mask = torch.ones(batch_size, num_object_slots, dtype=torch.bool, device=device)
        object_mask = object_mask.bool()
        if tuple(object_mask.shape) != (batch_size, num_object_slots):
            raise ValueError(
                f"object_mask must have shape {(batch_size, num_object_slots)}, "
                f"got {tuple(object_mask.shape)}"
            )
        object_spans = object_spans.long()
    num_object_slots = object_embeddings.size(1)

    # (batch,)
    num_objects = object_mask.sum(dim=1)
    if read_sizes is None:
        read_sizes = device.type == "cpu"
    if not read_sizes:
        max_words, longest = num_word_slots, num_word_slots + num_object_slots
    elif batch_size > 0:
        word_slots = torch.arange(num_word_slots, device=device)
        left_aligned = word_mask == (word_slots.unsqueeze(0) < num_words.unsqueeze(1))
        bad_spans = _bad_spans(object_spans, object_mask, num_words)
        # The sizes and the validity of the inputs in one read from the device: each separate read
        # would stall an accelerator's queue.
        summary = torch.stack([
            num_words.max(), (num_words + num_objects).max(), (~left_aligned).any().long(), bad_spans.any().long()
        ])
        max_words, longest, misaligned, invalid = (int(value) for value in summary.tolist())
        if misaligned:
            example = int((~left_aligned).any(dim=1).nonzero()[0])
            raise ValueError(f"word_mask of example {example} is not left-aligned (real words must come first)")
        if invalid:
            _raise_for_span(bad_spans, object_spans, num_words)
    else:
        max_words = longest = 0
    num_cells = longest + 2

    # Objects are packed in their original order with masked ones dropped: the rank of a real
    # object among the real objects of its example gives its cell, and `order[b, k]` is the
    # k-th real object of example b.
    # (batch, objects)
    object_rank = object_mask.long().cumsum(dim=1) - 1
    order = torch.argsort((~object_mask).long(), dim=1, stable=True)

    # One table holding every possible cell content; each cell then gathers its row.
    # Rows: [0, batch) [CLS], [batch, 2 batch) [SEP], 2 batch the zero padding row,
    # then words (batch * words), then objects (batch * objects).
    cls_rows = _broadcast_special(cls_embedding.to(word_embeddings.dtype), batch_size, dim, "cls_embedding")
    sep_rows = _broadcast_special(sep_embedding.to(word_embeddings.dtype), batch_size, dim, "sep_embedding")
    # (rows, dim)
    source = torch.cat(
        [
            cls_rows,
            sep_rows,
            word_embeddings.new_zeros(1, dim),
            word_embeddings.reshape(batch_size * num_word_slots, dim),
            object_embeddings.to(word_embeddings.dtype).reshape(batch_size * num_object_slots, dim),
        ],
        dim=0,
    )
    pad_row = 2 * batch_size
    word_row0 = pad_row + 1
    object_row0 = word_row0 + batch_size * num_word_slots

    # (batch, 1)
    batch_index = torch.arange(batch_size, device=device).unsqueeze(1)
    n = num_words.unsqueeze(1)
    m = num_objects.unsqueeze(1)
    # (1, cells)
    cell = torch.arange(num_cells, device=device).unsqueeze(0)

    is_cls = cell == 0
    # (batch, cells)
    is_word = (cell >= 1) & (cell <= n)
    is_sep = cell == n + 1
    object_slot = cell - n - 2  # rank of the object in this cell, when it is one
    is_object = (object_slot >= 0) & (object_slot < m)

    word_index = (cell - 1).clamp(0, max(num_word_slots - 1, 0))
    if num_object_slots > 0:
        # (batch, cells): which original object fills the cell
        object_index = order.gather(1, object_slot.clamp(0, num_object_slots - 1))
        object_first = object_spans[..., 0].gather(1, object_index)
        object_last = object_spans[..., 1].gather(1, object_index)
    else:
        object_index = torch.zeros_like(object_slot)
        object_first = object_last = torch.zeros_like(object_slot)

    row = torch.full_like(object_slot, pad_row)
    row = torch.where(is_cls, batch_index, row)
    row = torch.where(is_sep, batch_size + batch_index, row)
    row = torch.where(is_word, word_row0 + batch_index * num_word_slots + word_index, row)
    row = torch.where(is_object, object_row0 + batch_index * num_object_slots + object_index, row)
    # (batch, cells, dim)
    embeddings = source[row]

    zeros = torch.zeros_like(object_slot)
    # Words and [SEP] use their cell index as position: word i -> i + 1, [SEP] -> n + 1.
    word_or_sep = is_word | is_sep
    head = torch.where(word_or_sep, cell.expand_as(zeros), zeros)
    tail = head
    head = torch.where(is_object, object_first + 1, head)
    tail = torch.where(is_object, object_last + 1, tail)

    mask = cell < (n + m + 2)
    object_cell_index = torch.where(object_mask, n + 2 + object_rank, torch.zeros_like(object_rank))

    return FlatLattice(
        embeddings=embeddings,
        mask=mask,
        head=head,
        tail=tail,
        word_mask=word_mask[:, :max_words],
        object_mask=object_mask,
        object_cell_index=object_cell_index,
    )


class LatticeProjection(torch.nn.Module):
    """
    Projects words and visual objects onto the lattice dimension (Eq 1-2):
    ``x^c = W0 ReLU(W1 x + b1) + b0`` and ``v^c = W0 ReLU(W2 v + b2) + b0``, with `W0` shared by both
    modalities so that they land in one space.

    # Parameters

    text_dim : `int`
        Dimension of the word representations (e.g. 768 for BERT-base).
    visual_dim : `int`
        Dimension of the visual object features (e.g. 2048 for ResNet-152).
    hidden_dim : `int`, optional (default = `512`)
        The lattice dimension d.
    dropout : `float`, optional (default = `0.0`)
        Dropout after the ReLU.
    """

    def __init__(self, text_dim: int, visual_dim: int, hidden_dim: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.text_dim = text_dim
        self.visual_dim = visual_dim
        self.hidden_dim = hidden_dim
        self.text_hidden = torch.nn.Linear(text_dim, hidden_dim)  # W1, b1
        self.visual_hidden = torch.nn.Linear(visual_dim, hidden_dim)  # W2, b2
        self.output = torch.nn.Linear(hidden_dim, hidden_dim)  # W0, b0, shared
        self.dropout = torch.nn.Dropout(dropout)

    def project_text(self, words: torch.Tensor) -> torch.Tensor:
        """`(..., text_dim)` -> `(..., hidden_dim)`, Eq 1."""
        return self.output(self.dropout(torch.relu(self.text_hidden(words))))

    def project_visual(self, objects: torch.Tensor) -> torch.Tensor:
        """`(..., visual_dim)` -> `(..., hidden_dim)`, Eq 2."""
        return self.output(self.dropout(torch.relu(self.visual_hidden(objects))))

    def forward(
        self, words: torch.Tensor, objects: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        `words` `(batch, words, text_dim)`, `objects` `(batch, objects, visual_dim)` or None ->
        the projected `(batch, words, hidden_dim)` and `(batch, objects, hidden_dim)` (or None).
        """
        projected_objects = None if objects is None else self.project_visual(objects)
        return self.project_text(words), projected_objects
