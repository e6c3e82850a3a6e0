"""FMIT: the Flat Multi-modal Interaction Transformer (Lu et al., COLING 2022)."""
import copy
from typing import Any, Optional

import torch
from allennlp_light.modules.seq2seq_encoders import Seq2SeqEncoder
from tango.common import Lazy
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.checks import check_dimensions_match
from fmit_plugin.data.span_utils import bio_positions, bio_tags_to_spans, label_tensors
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.metrics.gmner_f1 import GmnerF1Measure
from fmit_plugin.metrics.span_f1 import SpanF1Measure
from fmit_plugin.models.model import Model
from fmit_plugin.modules.conditional_random_field import ConditionalRandomField
from fmit_plugin.modules.entity_grounding import EntityGrounding, GroundingInputs, ground_spans, spans_tensor
from fmit_plugin.modules.flat_lattice import LatticeProjection, build_flat_lattice, lattice_inputs_of
from fmit_plugin.modules.flat_lattice_transformer import FlatLatticeTransformer
from fmit_plugin.modules.tagging_head import TaggingHead, require_bio
from fmit_plugin.modules.token_embedders import TokenEmbedder

# Entity boundary tags of the EBD task, untyped BIOUL: the paper's {B, E, O} cannot tag a
# one-word entity (both its head and its tail), so single words get U and inner words I.
BOUNDARY_LABELS = ["O", "B-ENT", "I-ENT", "L-ENT", "U-ENT"]


@Model.register("fmit")
class Fmit(Model):
    """
    Words (a `TokenEmbedder`) and visual objects (feature vectors with the word span each belongs
    to) are projected to one space (Eq 1-2), flattened into one lattice
    ``[CLS] w_1..w_n [SEP] o_1..o_m`` whose cells carry head / tail positions, encoded by the flat
    lattice transformer (Eq 3-12), and the word cells are tagged by a BIO-constrained CRF.

    Entity boundary detection (EBD, training only): a second encoder of the same structure over
    the projected words alone, with its own CRF over untyped BIOUL boundary tags derived from the
    gold BIO tags; loss = -(log p(Y | S, O) + lambda * log p(Z | S)).

    A tweet with no visual objects (no image, or no features given) gets one object standing for
    the paper's uniform empty image: a learned feature vector spanning the whole sentence.

    Any allennlp-light `Seq2SeqEncoder` can replace the flat lattice transformer (`encoder`). What
    it takes from the lattice beside cells and mask, it declares in its class attribute
    `lattice_inputs` (`flat_lattice.lattice_inputs_of`): `("head", "tail")`, the cells' positions
    (`flat_lattice_transformer`); `("visual_mask",)`, which cells are visual objects
    (`umt_interaction`, the UMT baseline); an encoder that declares nothing runs over the same flat
    sequence without positions (the paper's "w/o Rel" row), and one whose `forward` takes positions
    it does not declare is refused.

    Registered as a `Model` with name "fmit".

    # Parameters

    vocab : `Vocabulary`
        Supplies the label set (`label_namespace`).
    text_field_embedder : `TokenEmbedder`
        Words -> vectors, e.g. "pretrained_transformer_mismatched"; projected to the lattice dimension d.
    encoder : `Seq2SeqEncoder`, optional (default = `flat_lattice_transformer`, d = 512, l = 3)
        Its input dim is the lattice dimension d.
    visual_dim : `int`, optional (default = `2048`)
        Size of the visual feature vectors (2048 for ResNet-152, 1280 for EfficientNet-Lite0).
    boundary_weight : `float`, optional (default = `0.25`)
        lambda of the EBD loss; `0` removes the branch entirely (the "w/o EBD" row).
    boundary_encoder : `Seq2SeqEncoder`, optional (default = a copy of `encoder`'s structure)
        Encoder of the EBD branch, which tags untyped entity boundaries; unused when `boundary_weight` is 0.
    label_namespace : `str`, optional (default = `"labels"`)
        The vocabulary namespace of the BIO labels (the one the data loader indexes gold tags in).
    label_encoding : `str`, optional (default = `"BIO"`)
        The labels' tag scheme; only "BIO" is accepted (the data, span F1 and entities are BIO).
    include_start_end_transitions : `bool`, optional (default = `True`)
        Learn CRF scores for starting and for ending a sentence with each tag, as AllenNLP does.
    constrain_crf_decoding : `bool`, optional (default = `True`)
        Decode only tag sequences valid under `label_encoding` (no `I-X` after `O`).
    dropout : `float`, optional (default = `0.2`)
        Dropout on the word embeddings, the projected lattice and the encoder output.
    verbose_metrics : `bool`, optional (default = `True`)
        Report per-type precision / recall / F1 beside the overall figures.
    crf : `ConditionalRandomField`, optional (default = `None`, i.e. `{"type": "allennlp_light"}`)
        The CRF backend of both the tagger and the boundary branch, e.g. `{"type": "pytorch_crf"}`; its
        other settings come from the keys above.
    max_words : `int`, optional (default = `512`)
        Longest tweet accepted, in words; a longer one is an `InputTooLongError` (the predictor's
        line error) before anything is allocated. 512 is the flat lattice transformer's default
        `max_distance` (farther positions all look alike) and keeps the lattice attention, whose
        memory grows with the square of the cells, within a few hundred MB per tweet; tweets are
        at most 280 characters. `null` removes the limit.
    entity_grounding : `EntityGrounding`, optional (default = `None`)
        Grounded MNER (docs/model.md): every entity also gets the visual object that shows it, or
        "none"; its loss is added with its `loss_weight`, `get_metrics` adds `gmner_f1`'s scores and
        the entities of `make_output_human_readable` their `box` and `box_confidence`. With its
        `type_from_region`, every predicted entity's type is the head's (from its words and region),
        with a `type_confidence`; with its `name_projection_dim`, each entity's name out of context
        (the embedder's `embed_out_of_context`) is also matched to each candidate's backbone features.
        Off when absent (no parameters added).
    """

    default_predictor = "sentence_tagger"
    length_limit_reason = ("the lattice attention's memory grows with the square of the length, "
                           "and positions beyond the encoder's max_distance are clamped")

    def __init__(
        self,
        vocab: Vocabulary,
        text_field_embedder: TokenEmbedder,
        encoder: Optional[Seq2SeqEncoder] = None,
        visual_dim: int = 2048,
        boundary_weight: float = 0.25,
        boundary_encoder: Optional[Seq2SeqEncoder] = None,
        label_namespace: str = "labels",
        label_encoding: str = "BIO",
        include_start_end_transitions: bool = True,
        constrain_crf_decoding: bool = True,
        dropout: float = 0.2,
        verbose_metrics: bool = True,
        crf: Optional[Lazy[ConditionalRandomField]] = None,
        max_words: Optional[int] = 512,
        entity_grounding: Optional[Lazy[EntityGrounding]] = None,
    ) -> None:
        super().__init__(vocab, max_words)
        require_bio(label_encoding)
        if boundary_weight < 0:
            raise ConfigurationError(f"boundary_weight must be >= 0, got {boundary_weight}")
        self.label_namespace = label_namespace
        self.text_field_embedder = text_field_embedder
        self.encoder = encoder or FlatLatticeTransformer()
        hidden_dim = self.encoder.get_input_dim()
        check_dimensions_match(
            hidden_dim, self.encoder.get_output_dim(), "encoder input dim", "encoder output dim"
        )
        self.visual_dim = visual_dim
        self.projection = LatticeProjection(text_field_embedder.get_output_dim(), visual_dim, hidden_dim)
        # [CLS] and [SEP] cells: learned, since the word embedder pools pieces to words only.
        self.cls_embedding = torch.nn.Parameter(torch.randn(hidden_dim) * 0.02)
        self.sep_embedding = torch.nn.Parameter(torch.randn(hidden_dim) * 0.02)
        # The backbone features of the uniform empty image are one constant vector: learned here.
        self.empty_image_feature = torch.nn.Parameter(torch.zeros(visual_dim))
        # What the encoder declares it takes from the lattice: positions, which cells are objects.
        self._encoder_inputs = lattice_inputs_of(self.encoder)
        self.dropout = torch.nn.Dropout(dropout) if dropout else torch.nn.Identity()
        self._verbose_metrics = verbose_metrics
        labels = vocab.get_index_to_token_vocabulary(label_namespace)
        self.tagging_head = TaggingHead(
            hidden_dim, labels, use_crf=True, label_encoding=label_encoding,
            constrain_crf_decoding=constrain_crf_decoding,
            include_start_end_transitions=include_start_end_transitions, crf=crf,
        )
        self.boundary_weight = boundary_weight
        self.boundary_encoder: Optional[Seq2SeqEncoder] = None
        self.boundary_head: Optional[TaggingHead] = None
        if boundary_weight > 0:
            # A structural copy: separate parameters (same initial values, then trained apart).
            self.boundary_encoder = boundary_encoder or copy.deepcopy(self.encoder)
            check_dimensions_match(
                hidden_dim, self.boundary_encoder.get_input_dim(), "encoder input dim", "boundary encoder input dim"
            )
            self.boundary_head = TaggingHead(
                self.boundary_encoder.get_output_dim(), dict(enumerate(BOUNDARY_LABELS)), use_crf=True,
                label_encoding="BIOUL", crf=crf,
            )
        self._f1_metric = SpanF1Measure()
        # Prefix (0 O, 1 B, 2 I) and type index of every label id, for `_boundary_tags`.
        prefixes, kinds, types = label_tensors(labels)
        self.entity_grounding = (
            entity_grounding.construct(
                input_dim=hidden_dim, entity_types=types, name_dim=text_field_embedder.get_output_dim(),
                appearance_dim=visual_dim,
            ) if entity_grounding else None
        )
        self._gmner_metric = GmnerF1Measure()
        # The B- and I- ids of each type, for retyping entities from their regions (`type_from_region`).
        ids = {label: index for index, label in labels.items()}
        self._type_ids = {kind: (ids[f"B-{kind}"], ids[f"I-{kind}"]) for kind in types
                          if f"B-{kind}" in ids and f"I-{kind}" in ids}
        self._label_prefix: torch.Tensor
        self._label_type: torch.Tensor
        self.register_buffer("_label_prefix", prefixes, persistent=False)
        self.register_buffer("_label_type", kinds, persistent=False)

    def _objects(
        self,
        words: list[list[str]],
        object_features: Optional[torch.Tensor],
        object_spans: Optional[torch.Tensor],
        object_mask: Optional[torch.Tensor],
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Visual objects plus, for every tweet without one, the empty-image object."""
        batch_size = len(words)
        if object_features is None or object_spans is None or object_mask is None:
            object_features = torch.zeros(batch_size, 0, self.visual_dim, device=device)
            object_spans = torch.zeros(batch_size, 0, 2, dtype=torch.long, device=device)
            object_mask = torch.zeros(batch_size, 0, dtype=torch.bool, device=device)
        if object_features.shape[-1] != self.visual_dim:
            raise ConfigurationError(
                f"visual features have {object_features.shape[-1]} dims, the model's visual_dim is "
                f"{self.visual_dim}"
            )
        # (batch, 1, visual_dim): the empty image, spanning every word, real only where needed.
        lengths = torch.tensor([len(w) for w in words]).to(device, non_blocking=True)
        empty = self.empty_image_feature.view(1, 1, -1).expand(batch_size, 1, -1)
        empty_spans = torch.stack([torch.zeros_like(lengths), lengths - 1], dim=-1).unsqueeze(1)
        empty_mask = ~object_mask.any(dim=1, keepdim=True)
        return (
            torch.cat([object_features.to(empty.dtype), empty], dim=1),
            torch.cat([object_spans, empty_spans], dim=1),
            torch.cat([object_mask.bool(), empty_mask], dim=1),
        )

    def forward(  # type: ignore[override]
        self,
        words: list[list[str]],
        tags: Optional[torch.Tensor] = None,
        object_features: Optional[torch.Tensor] = None,
        object_spans: Optional[torch.Tensor] = None,
        object_mask: Optional[torch.Tensor] = None,
        metadata: Optional[list[dict[str, Any]]] = None,
        entity_spans: Optional[torch.Tensor] = None,
        entity_span_mask: Optional[torch.Tensor] = None,
        grounding_targets: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """
        words : the tweets' words; tags : `(batch, words)` gold ids, optional;
        object_features `(batch, objects, visual_dim)`, object_spans `(batch, objects, 2)`
        (inclusive 0-based first / last word), object_mask `(batch, objects)`: optional.
        entity_spans `(batch, entities, 2)`, entity_span_mask, grounding_targets `(batch,
        entities, objects + 1)`: the gold grounding (`data_loader.grounding_targets`), optional.
        """
        self.check_lengths(len(sentence) for sentence in words)
        embedded, word_mask = self.text_field_embedder(words)  # (batch, words, text_dim)
        device = embedded.device
        features, spans, mask = self._objects(words, object_features, object_spans, object_mask, device)
        # (batch, words, d), (batch, objects, d)
        text_cells, object_cells = self.projection(self.dropout(embedded), features)
        lattice = build_flat_lattice(
            self.dropout(text_cells), word_mask, self.dropout(object_cells), mask, spans,
            self.cls_embedding, self.sep_embedding,
        )
        encoder_inputs: dict[str, torch.Tensor] = {}
        if "head" in self._encoder_inputs:
            encoder_inputs.update(head=lattice.head, tail=lattice.tail)
        if "visual_mask" in self._encoder_inputs:
            encoder_inputs["visual_mask"] = lattice.object_cell_mask()
        encoded = self.encoder(lattice.embeddings, lattice.mask, **encoder_inputs)
        word_outputs = self.dropout(lattice.word_outputs(encoded))  # (batch, words, d)
        output = self.tagging_head.tag(word_outputs, word_mask, words, tags)
        if self.entity_grounding is not None:
            given = 0 if object_mask is None else object_mask.shape[1]
            uses_names = self.entity_grounding.uses_names
            output.update(
                grounding_inputs=GroundingInputs(
                    words=word_outputs,
                    # (batch, given objects, d): the empty-image object appended last is no candidate.
                    objects=self.dropout(lattice.object_outputs(encoded))[:, :given],
                    candidates=lattice.object_mask[:, :given],
                    names=self.text_field_embedder.embed_out_of_context(words).to(device) if uses_names else None,
                    appearances=features[:, :given] if uses_names else None,  # (batch, given objects, visual_dim)
                ),
                object_boxes=[item.get("object_boxes", []) for item in metadata or [{} for _ in words]],
            )
            if self.entity_grounding.typer is not None:
                self._type_from_region(output, word_mask)
        if tags is not None:
            self._f1_metric.add_ids(output["tags"], tags, word_mask, self.tagging_head.labels)
        if tags is not None and self.training and self.boundary_encoder is not None:
            assert self.boundary_head is not None
            boundary = self.boundary_encoder(self.dropout(text_cells), word_mask)
            boundary_tags = self._boundary_tags(tags, word_mask)
            boundary_loss = self.boundary_head(boundary, word_mask, boundary_tags)["loss"]
            output["boundary_loss"] = boundary_loss
            output["loss"] = output["loss"] + self.boundary_weight * boundary_loss
        if self.entity_grounding is not None:
            if grounding_targets is not None and entity_spans is not None and entity_span_mask is not None:
                head_inputs = (output["grounding_inputs"], entity_spans, entity_span_mask)
                if self.entity_grounding.typer is not None and tags is not None:
                    type_logits, logits = self.entity_grounding.types(*head_inputs)
                    # (batch, entities): each gold entity's type, read at its first word.
                    gold_types = self._label_type[tags.gather(1, entity_spans[..., 0])]
                    output["type_loss"] = self.entity_grounding.type_loss(type_logits, gold_types, entity_span_mask)
                else:
                    logits = self.entity_grounding(*head_inputs)
                grounding_loss = self.entity_grounding.loss(logits, grounding_targets, entity_span_mask)
                if self.entity_grounding.uses_names:
                    name_loss = self.entity_grounding.name_loss(*head_inputs, grounding_targets)
                    output["name_loss"] = name_loss
                    grounding_loss = grounding_loss + self.entity_grounding.name_contrastive_weight * name_loss
                output["grounding_loss"] = grounding_loss
                if "loss" in output:
                    head_loss = grounding_loss + output.get("type_loss", 0.0)
                    output["loss"] = output["loss"] + self.entity_grounding.loss_weight * head_loss
            if tags is not None and metadata and all("entity_boxes" in item for item in metadata):
                self._update_gmner_metric(output, tags, word_mask, metadata)
        return output

    def _type_from_region(self, output: dict[str, Any], word_mask: torch.Tensor) -> None:
        """`type_from_region`: every predicted entity gets the type the grounding head gives it from
        its words and region, in `output["tags"]` (each entity retagged B-X I-X ..., so boundaries
        stay), and that type's probability in `output["type_confidences"]` (per sentence, by span)."""
        assert self.entity_grounding is not None
        labels = self.tagging_head.labels
        tags = output["tags"]
        full = tags.tolist()  # (batch, words) on the host: one transfer each way
        spans = [[(start, end) for _, start, end in bio_tags_to_spans([labels[i] for i in row])]
                 for row in self.tagging_head.rows(tags, word_mask)]
        confidences: list[dict[tuple[int, int], float]] = [{} for _ in spans]
        output["type_confidences"] = confidences
        if not any(spans):
            return
        span_tensor, span_mask = spans_tensor(spans, tags.device)
        type_logits, _ = self.entity_grounding.types(output["grounding_inputs"], span_tensor, span_mask)
        confidence, best = torch.softmax(type_logits.float(), dim=-1).max(dim=-1)
        best_rows, confidence_rows = best.tolist(), confidence.tolist()
        for row, sentence in enumerate(spans):
            for column, (start, end) in enumerate(sentence):
                kind = self.entity_grounding.entity_types[best_rows[row][column]]
                if kind not in self._type_ids:  # a type the labels cannot write: the tagger's stays
                    continue
                begin, inside = self._type_ids[kind]
                full[row][start:end] = [begin] + [inside] * (end - start - 1)
                confidences[row][(start, end)] = confidence_rows[row][column]
        output["tags"] = torch.tensor(full, dtype=tags.dtype, device=tags.device)

    def _grounded(self, output: dict[str, Any], spans: list[list[tuple[int, int]]]) -> list[list[tuple[Any, float]]]:
        """The box and its confidence for each (start, end exclusive) span of each sentence."""
        assert self.entity_grounding is not None
        return ground_spans(self.entity_grounding, output["grounding_inputs"], output["object_boxes"], spans)

    def _update_gmner_metric(
        self, output: dict[str, Any], tags: torch.Tensor, word_mask: torch.Tensor, metadata: list[dict[str, Any]]
    ) -> None:
        """gmner_f1 over the batch: reads the predicted and gold tags back to the host (grounding only)."""
        labels = self.tagging_head.labels
        predicted, gold = (
            [bio_tags_to_spans([labels[i] for i in row]) for row in self.tagging_head.rows(ids, word_mask)]
            for ids in (output["tags"], tags)
        )
        boxes = self._grounded(output, [[(start, end) for _, start, end in sentence] for sentence in predicted])
        self._gmner_metric(
            [[(kind, start, end, box) for (kind, start, end), (box, _) in zip(sentence, chosen, strict=True)]
             for sentence, chosen in zip(predicted, boxes, strict=True)],
            [[(kind, start, end, item["entity_boxes"].get((start, end), [])) for kind, start, end in sentence]
             for sentence, item in zip(gold, metadata, strict=True)],
        )

    def _boundary_tags(self, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        Gold BIO ids `(batch, words)` -> untyped BIOUL boundary ids, entities read as conlleval
        (and `bio_tags_to_spans`) reads them: B-X opens one; I-X continues an entity of type X that
        is open on the previous word, else opens one. Elementwise on the tags' device, so training
        reads nothing back to the host here.
        """
        entities = bio_positions(tags, mask, self._label_prefix, self._label_type)
        begins, ends = entities.starts, entities.last
        ids = {label: BOUNDARY_LABELS.index(label) for label in BOUNDARY_LABELS}
        boundary = torch.where(entities.inside, ids["I-ENT"], ids["O"])
        boundary = torch.where(begins & ~ends, ids["B-ENT"], boundary)
        boundary = torch.where(~begins & ends, ids["L-ENT"], boundary)
        return torch.where(begins & ends, ids["U-ENT"], boundary)

    def make_output_human_readable(self, output_dict: dict[str, Any]) -> dict[str, Any]:
        output_dict = self.tagging_head.make_output_human_readable(output_dict)
        if self.entity_grounding is not None:
            # Each entity's box in image pixels ([x0, y0, x1, y1]) or None ("not in the image").
            sentences = output_dict["entities"]
            chosen = self._grounded(output_dict, [[(e["start"], e["end"]) for e in entities] for entities in sentences])
            for entities, boxes in zip(sentences, chosen, strict=True):
                for entity, (box, confidence) in zip(entities, boxes, strict=True):
                    entity["box"] = None if box is None else [round(float(v), 1) for v in box]
                    entity["box_confidence"] = round(confidence, 6)
            for entities, by_span in zip(sentences, output_dict.get("type_confidences", [{}] * len(sentences)),
                                         strict=True):
                for entity in entities:
                    if (entity["start"], entity["end"]) in by_span:
                        entity["type_confidence"] = round(by_span[(entity["start"], entity["end"])], 6)
        return output_dict

    def get_metrics(self, reset: bool = False) -> dict[str, float]:
        metrics = self._f1_metric.get_metric(reset)
        if not self._verbose_metrics:
            metrics = {name: value for name, value in metrics.items() if "overall" in name}
        if self.entity_grounding is not None:
            metrics.update(self._gmner_metric.get_metric(reset))
        return metrics
