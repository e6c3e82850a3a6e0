"""Grounded MNER: for each entity span, which visual object shows it, or "not in the image"."""
import math
from collections.abc import Sequence
from typing import NamedTuple, Optional

import torch
from allennlp_light.modules.span_extractors import EndpointSpanExtractor
from allennlp_light.nn import util
from tango.common import FromParams
from tango.common.exceptions import ConfigurationError

from fmit_plugin.vision.regions import Box


class GroundingInputs(NamedTuple):
    """What the head reads of one batch (the model gathers it once per forward)."""

    words: torch.Tensor  # (batch, words, dim): the encoder's word outputs
    objects: torch.Tensor  # (batch, objects, dim): the encoder's outputs of the candidates
    candidates: torch.Tensor  # (batch, objects) bool: which object slots are real candidates
    names: Optional[torch.Tensor] = None  # (batch, words, name_dim): each word out of context
    appearances: Optional[torch.Tensor] = None  # (batch, objects, appearance_dim): the backbone's features


class EntityGrounding(torch.nn.Module, FromParams):
    """
    Scores, for every entity span, each visual-object cell of the lattice and one more option,
    "not in the image", from the encoder's outputs: the entity is its first and last word cells
    (allennlp-light's `EndpointSpanExtractor`), projected to a query; each object cell is projected
    to a key; an object's score is their scaled dot product, "none" a learned function of the query.

    Trained with cross-entropy against every option that is right (`loss`): the candidates whose IoU
    with a gold box is at least 0.5, or "none" for an entity that is not groundable; the loss is the
    negative log of the probability mass on them. Decoding (`decode`) picks the best option.

    The `fmit` model builds it (`entity_grounding` block of its config) with its lattice dimension.

    # Parameters

    input_dim : `int`
        The encoder's output dim (given by the model).
    projection_dim : `int`, optional (default = `128`)
        Size of the query and key spaces.
    loss_weight : `float`, optional (default = `1.0`)
        Weight of the grounding loss (and of the typing loss, with `type_from_region`) added to the
        tagging loss.
    type_from_region : `bool`, optional (default = `False`)
        Also type every entity from its words and the region the head grounds it to (`types`): a
        classifier over the entity's span vector and the encoder outputs of the candidates weighted by
        the head's probabilities ("none" adds nothing), trained with cross-entropy on the gold
        entities; the model then replaces the tagger's type of each predicted entity with this one.
        Where the picture, not the text, says what a name is and candidates span the whole sentence,
        the tagger has to learn the name-to-region match through its attention alone, from the type
        loss; the head learns it from the boxes directly, so its match types the entity better.
    entity_types : `Sequence[str]`, optional (default = `()`)
        The types `types` chooses among, in order; given by the model (its labels' types).
    name_projection_dim : `int`, optional (default = `0`)
        If positive, every candidate's score also gets a name-to-appearance term: the entity's name
        out of context (the mean of its words' `embed_out_of_context` vectors) and the candidate's
        own backbone features (standardised by a `BatchNorm1d` over the candidates), each projected
        to this size, their scaled dot product. The encoder's outputs mix an entity and a candidate
        with the rest of their tweet, which lets the head fit the training tweets themselves; this
        term can only learn what a name looks like, which carries over to new tweets with the same
        names (docs/results.md, "Grounded MNER"). `0` leaves it out.
    name_contrastive_weight : `float`, optional (default = `1.0`)
        With `name_projection_dim`: weight of a second loss on that term, across the batch: each
        groundable gold entity's name against the first right candidate of every groundable gold
        entity of the batch (cross-entropy; entities of the same name all count as right), so that
        the name has to tell its look apart from other tweets' entities too, not only from the
        other candidates of its own image.
    name_dim : `int`, optional (default = `0`)
        Size of the name vectors (given by the model: its text embedder's output dim).
    appearance_dim : `int`, optional (default = `0`)
        Size of the candidates' features (given by the model: its `visual_dim`).
    dropout : `float`, optional (default = `0.2`)
        Dropout on the name vectors and the standardised features.
    """

    def __init__(
        self,
        input_dim: int,
        projection_dim: int = 128,
        loss_weight: float = 1.0,
        type_from_region: bool = False,
        entity_types: Sequence[str] = (),
        name_projection_dim: int = 0,
        name_contrastive_weight: float = 1.0,
        name_dim: int = 0,
        appearance_dim: int = 0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if loss_weight < 0:
            raise ConfigurationError(f"entity_grounding.loss_weight must be >= 0, got {loss_weight}")
        if projection_dim < 1:
            raise ConfigurationError(f"entity_grounding.projection_dim must be positive, got {projection_dim}")
        if name_projection_dim < 0 or name_contrastive_weight < 0:
            raise ConfigurationError(
                "entity_grounding.name_projection_dim and name_contrastive_weight must be >= 0, got "
                f"{name_projection_dim} and {name_contrastive_weight}"
            )
        if name_projection_dim and (name_dim < 1 or appearance_dim < 1):
            raise ConfigurationError(
                "entity_grounding.name_projection_dim needs the model's name_dim and appearance_dim; it has "
                f"{name_dim} and {appearance_dim}"
            )
        if type_from_region and not entity_types:
            raise ConfigurationError("entity_grounding.type_from_region needs the model's entity types; it has none")
        self.loss_weight = loss_weight
        self.span_extractor = EndpointSpanExtractor(input_dim, combination="x,y")
        self.query = torch.nn.Linear(self.span_extractor.get_output_dim(), projection_dim)
        self.key = torch.nn.Linear(input_dim, projection_dim)
        self.none_score = torch.nn.Linear(projection_dim, 1)
        self._scale = 1.0 / math.sqrt(projection_dim)
        self.entity_types = tuple(entity_types) if type_from_region else ()
        self.typer: Optional[torch.nn.Linear] = None
        if type_from_region:
            self.typer = torch.nn.Linear(self.span_extractor.get_output_dim() + input_dim, len(self.entity_types))
        self.name_contrastive_weight = name_contrastive_weight
        self.name_query: Optional[torch.nn.Linear] = None
        self.appearance_key: Optional[torch.nn.Linear] = None
        if name_projection_dim:
            self.name_query = torch.nn.Linear(name_dim, name_projection_dim)
            # Standardises each feature over the candidates (with running statistics for evaluation).
            self.appearance_norm = torch.nn.BatchNorm1d(appearance_dim)
            self.appearance_key = torch.nn.Linear(appearance_dim, name_projection_dim)
            self._name_scale = 1.0 / math.sqrt(name_projection_dim)
        self.dropout = torch.nn.Dropout(dropout) if dropout else torch.nn.Identity()

    @property
    def uses_names(self) -> bool:
        """Whether the head reads `GroundingInputs.names` and `.appearances` (`name_projection_dim`)."""
        return self.name_query is not None

    def forward(self, inputs: GroundingInputs, spans: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """
        spans `(batch, entities, 2)` (start, end exclusive), span_mask `(batch, entities)`; returns
        logits `(batch, entities, objects + 1)`, the last option "none", masked objects at the
        dtype's lowest value.
        """
        return self._logits(self._span_vectors(inputs.words, spans, span_mask), inputs, spans, span_mask)

    def types(
        self, inputs: GroundingInputs, spans: torch.Tensor, span_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        With `type_from_region`: the type logits `(batch, entities, types)` of the spans (arguments as
        `forward`'s) and the grounding logits `forward` gives, from one span extraction.
        """
        assert self.typer is not None, "types() needs type_from_region"
        vectors = self._span_vectors(inputs.words, spans, span_mask)
        logits = self._logits(vectors, inputs, spans, span_mask)
        # (batch, entities, dim): the candidates' outputs weighted by the head's probabilities.
        region = torch.einsum("beo,bod->bed", torch.softmax(logits.float(), dim=-1)[..., :-1].to(vectors.dtype),
                              inputs.objects)
        return self.typer(torch.cat([vectors, region], dim=-1)), logits

    def _span_vectors(self, word_outputs: torch.Tensor, spans: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """(batch, entities, span dim): the first and last word outputs of each span."""
        if not spans.size(1):
            # A batch without entities (tweets without names): allennlp-light's index check takes a
            # max over the empty span tensor and fails, so its (batch, 0, dim) output is made here.
            return word_outputs.new_zeros(spans.size(0), 0, self.span_extractor.get_output_dim())
        # contiguous: allennlp-light's batched_index_select views the sequence (a lattice slice may not be).
        return self.span_extractor(word_outputs.contiguous(), _inclusive(spans, span_mask), span_indices_mask=span_mask)

    def _logits(
        self, vectors: torch.Tensor, inputs: GroundingInputs, spans: torch.Tensor, span_mask: torch.Tensor
    ) -> torch.Tensor:
        queries = self.query(vectors)  # (batch, entities, projection)
        keys = self.key(inputs.objects)  # (batch, objects, projection)
        object_logits = torch.einsum("bep,bop->beo", queries, keys) * self._scale
        if self.uses_names:
            names = self._name_queries(self._names(inputs, spans, span_mask))  # (batch, entities, p)
            appearances = self._appearance_keys(inputs)  # (batch, objects, p)
            object_logits = object_logits + torch.einsum("bep,bop->beo", names, appearances) * self._name_scale
        lowest = torch.finfo(object_logits.dtype).min
        object_logits = object_logits.masked_fill(~inputs.candidates.bool().unsqueeze(1), lowest)
        return torch.cat([object_logits, self.none_score(queries)], dim=-1)

    def _names(self, inputs: GroundingInputs, spans: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """(batch, entities, name_dim): the mean of each span's out-of-context word vectors."""
        if inputs.names is None:
            raise ConfigurationError("entity_grounding.name_projection_dim needs the words out of context (names)")
        if not spans.size(1):
            return inputs.names.new_zeros(spans.size(0), 0, inputs.names.shape[-1])
        # (batch, entities, widest span, name_dim) and which of those words are in the span
        # (allennlp-light annotates the indices as the legacy `LongTensor` type; a long tensor is one).
        words, word_mask = util.batched_span_select(
            inputs.names.contiguous(), _inclusive(spans, span_mask)  # type: ignore[arg-type]
        )
        return util.masked_mean(words, word_mask.unsqueeze(-1), dim=2)

    def _name_queries(self, names: torch.Tensor) -> torch.Tensor:
        assert self.name_query is not None
        return self.name_query(self.dropout(names))

    def _appearance_keys(self, inputs: GroundingInputs) -> torch.Tensor:
        """(batch, objects, p): the candidates' features standardised over the real candidates only."""
        assert self.appearance_key is not None
        if inputs.appearances is None:
            raise ConfigurationError("entity_grounding.name_projection_dim needs the candidates' features")
        real = inputs.candidates.bool()
        standardised = torch.zeros_like(inputs.appearances)
        count = int(real.sum())
        if count:
            # One candidate in a training batch has no spread to standardise by: the running statistics.
            norm = self.appearance_norm
            standardised[real] = norm(inputs.appearances[real]) if count > 1 or not self.training else (
                torch.nn.functional.batch_norm(inputs.appearances[real], norm.running_mean, norm.running_var,
                                               norm.weight, norm.bias, training=False, eps=norm.eps))
        return self.appearance_key(self.dropout(standardised))

    def name_loss(
        self, inputs: GroundingInputs, spans: torch.Tensor, span_mask: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """
        With `name_projection_dim`: the across-batch name-to-appearance loss (see
        `name_contrastive_weight`); targets as `loss`'s. Zero without names or groundable entities.
        """
        counted = span_mask & targets[..., :-1].any(dim=-1)  # (batch, entities): groundable gold entities
        if not self.uses_names or not bool(counted.any()):
            return targets.new_zeros((), dtype=torch.float)
        names = self._names(inputs, spans, span_mask)[counted]  # (n, name_dim)
        queries = self._name_queries(names)  # (n, p)
        rows = counted.nonzero()[:, 0]
        first_right = targets[..., :-1][counted].float().argmax(dim=-1)  # (n,) each one's first right candidate
        keys = self._appearance_keys(inputs)[rows, first_right]  # (n, p)
        logits = queries @ keys.T * self._name_scale  # (n, n)
        same_name = (names.unsqueeze(1) == names.unsqueeze(0)).all(dim=-1)  # (n, n), the diagonal included
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        return -log_probs.masked_fill(~same_name, float("-inf")).logsumexp(dim=-1).mean()

    @staticmethod
    def type_loss(type_logits: torch.Tensor, gold_types: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the gold types `(batch, entities)` over the entities of `span_mask`;
        zero without any."""
        if not bool(span_mask.any()):
            return type_logits.new_zeros((), dtype=torch.float)
        return torch.nn.functional.cross_entropy(type_logits[span_mask].float(), gold_types[span_mask])

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
        """
        Mean over the entities of `span_mask` with at least one right option of
        -log(sum of the probabilities of the right options); logits and targets (bool)
        `(batch, entities, objects + 1)`. Zero when no entity counts.
        """
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        right = log_probs.masked_fill(~targets, float("-inf")).logsumexp(dim=-1)  # (batch, entities)
        counted = span_mask & targets.any(dim=-1)
        if not bool(counted.any()):
            return logits.new_zeros((), dtype=torch.float)
        return -right[counted].mean()

    @staticmethod
    def decode(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The best option `(batch, entities)` (an object index, or `objects` for "none") and its
        probability."""
        probabilities = torch.softmax(logits.float(), dim=-1)
        confidence, best = probabilities.max(dim=-1)
        return best, confidence


def _inclusive(spans: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
    """(start, end exclusive) spans -> allennlp-light's inclusive (start, end); masked spans (0, 0)."""
    inclusive = torch.stack([spans[..., 0], (spans[..., 1] - 1).clamp(min=0)], dim=-1)
    return inclusive * span_mask.unsqueeze(-1).long()


def spans_tensor(spans: list[list[tuple[int, int]]], device: Optional[torch.device] = None) -> tuple[
    torch.Tensor, torch.Tensor
]:
    """Per-sentence (start, end exclusive) spans -> padded `(batch, entities, 2)` and mask."""
    width = max((len(sentence) for sentence in spans), default=0)
    tensor = torch.zeros(len(spans), width, 2, dtype=torch.long)
    mask = torch.zeros(len(spans), width, dtype=torch.bool)
    for row, sentence in enumerate(spans):
        for column, (start, end) in enumerate(sentence):
            tensor[row, column] = torch.tensor([start, end])
            mask[row, column] = True
    return tensor.to(device), mask.to(device)


@torch.no_grad()
def ground_spans(
    head: EntityGrounding,
    inputs: GroundingInputs,
    object_boxes: list[list[Optional[Box]]],
    spans: list[list[tuple[int, int]]],
) -> list[list[tuple[Optional[Box], float]]]:
    """
    The decoded box (`None` for "not in the image", or for a chosen object without a box) and its
    probability for each (start, end exclusive) span of each sentence; `object_boxes` are the boxes
    of each sentence's visual objects, in the order of `inputs.objects`.
    """
    if not any(spans):
        return [[] for _ in spans]
    span_tensor, span_mask = spans_tensor(spans, inputs.words.device)
    best, confidence = head.decode(head(inputs, span_tensor, span_mask))
    best_rows, confidence_rows = best.tolist(), confidence.tolist()
    result: list[list[tuple[Optional[Box], float]]] = []
    for row, sentence in enumerate(spans):
        boxes = object_boxes[row] if row < len(object_boxes) else []
        chosen = []
        for column in range(len(sentence)):
            index = best_rows[row][column]
            box = boxes[index] if index < len(boxes) and index < inputs.objects.shape[1] else None
            chosen.append((box, confidence_rows[row][column]))
        result.append(chosen)
    return result
