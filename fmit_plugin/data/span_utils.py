"""
BIO tags and entity spans: decoding tag strings into spans (as conlleval and seqeval's default mode
do, plus a strict mode), and the same reading elementwise on label-id tensors, for the span F1
counts and FMIT's boundary tags. As AllenNLP keeps `bio_tags_to_spans` beside its data
(`data/dataset_readers/dataset_utils/span_utils.py`).
"""
from collections.abc import Mapping, Sequence
from typing import List, NamedTuple, Optional, Tuple

import torch

Span = Tuple[str, int, int]
# Per label id its prefix and type index `(labels,)` each, and the sorted types.
LabelTensors = Tuple[torch.Tensor, torch.Tensor, Tuple[str, ...]]


def _split_tag(tag: str) -> Tuple[str, Optional[str]]:
    """`"B-PER"` -> `("B", "PER")`, `"O"` -> `("O", None)`; anything else is an error, not a guess."""
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[0] in "BI" and tag[1] == "-":
        return tag[0], tag[2:]
    raise ValueError(f"Tag {tag!r} is neither 'O' nor of the form 'B-<type>' / 'I-<type>'")


def bio_tags_to_spans(tags: Sequence[str], strict: bool = False) -> List[Span]:
    """
    Decodes BIO tags into `(type, start, end)` spans, `start` inclusive and `end` exclusive.

    Written by hand rather than calling seqeval: seqeval is only a test dependency, and its API works
    on whole corpora rather than on one sentence's spans.

    Default mode (conlleval / seqeval default): `B-X` always opens an entity; `I-X` continues an open
    entity of type X and otherwise (after `O` or another type) opens a new entity of type X; an entity
    ends on `O`, on `B-`, or when the type changes.

    Strict mode: only `B-X` opens an entity; an `I-X` that does not continue an entity of type X is
    dropped, so it and the `I-X` tags following it belong to no entity.
    """
    spans: List[Span] = []
    open_type: Optional[str] = None
    open_start = 0
    for index, tag in enumerate(tags):
        prefix, tag_type = _split_tag(tag)
        if prefix == "I" and tag_type == open_type:
            continue
        if open_type is not None:
            spans.append((open_type, open_start, index))
            open_type = None
        if prefix == "B" or (prefix == "I" and not strict):
            open_type, open_start = tag_type, index
    if open_type is not None:
        spans.append((open_type, open_start, len(tags)))
    return spans


def label_tensors(labels: Mapping[int, str], device: Optional[torch.device] = None) -> LabelTensors:
    """Per label id `(labels,)`: its prefix (0 `O`, 1 `B`, 2 `I`) and its type's index in the
    sorted types (0 for `O`); and the sorted types."""
    split = {index: _split_tag(label) for index, label in labels.items()}
    types = tuple(sorted({tag_type for _, tag_type in split.values() if tag_type is not None}))
    size = max(labels) + 1 if labels else 0
    prefixes, kinds = [0] * size, [0] * size
    for index, (prefix, tag_type) in split.items():
        prefixes[index] = "OBI".index(prefix)
        kinds[index] = types.index(tag_type) if tag_type is not None else 0
    return torch.tensor(prefixes, device=device), torch.tensor(kinds, device=device), types


class BioPositions(NamedTuple):
    """Where the entities of a batch of BIO label ids lie, read as `bio_tags_to_spans` reads them
    (default mode); each `(batch, time)`."""

    inside: torch.Tensor  # the word belongs to an entity
    starts: torch.Tensor  # the word opens an entity
    last: torch.Tensor  # the word closes an entity
    kind: torch.Tensor  # the entity's type index, -1 outside entities
    opened_by_b: torch.Tensor  # the word opens an entity with `B-` (the strict mode's entities)


def bio_positions(ids: torch.Tensor, mask: torch.Tensor, prefixes: torch.Tensor, kinds: torch.Tensor) -> BioPositions:
    """
    `bio_tags_to_spans` for a batch of label ids, elementwise on their device: `ids` and `mask`
    `(batch, time)` (left-aligned), `prefixes` / `kinds` from `label_tensors`. `B-X` opens an
    entity; `I-X` continues one of type X open on the previous word, else opens one. The strict
    mode's entities are exactly those opened by `B-`: both modes end an entity on `O`, `B-` or a type
    change.
    """
    mask = mask.bool()
    # Ids past a sequence's end may be anything (e.g. Viterbi's sentinel states): clamp, then mask.
    ids = ids.clamp(0, prefixes.numel() - 1)
    prefix = torch.where(mask, prefixes[ids], 0)
    inside = prefix > 0
    kind = torch.where(inside, kinds[ids], -1)
    before = torch.full_like(kind[:, :1], -1)
    starts = inside & ((prefix == 1) | (torch.cat([before, kind[:, :-1]], dim=1) != kind))
    after = torch.zeros_like(inside[:, :1])
    next_inside = torch.cat([inside[:, 1:], after], dim=1)
    next_starts = torch.cat([starts[:, 1:], after], dim=1)
    last = inside & (~next_inside | next_starts)
    return BioPositions(inside, starts, last, kind, starts & (prefix == 1))
