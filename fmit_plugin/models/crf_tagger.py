"""Text-only tagger: transformer word vectors -> optional encoder -> CRF (BERT-CRF) or softmax (BERT)."""
from typing import Any, Optional

import torch
from allennlp_light.modules import FeedForward
from allennlp_light.modules.seq2seq_encoders import PassThroughEncoder, Seq2SeqEncoder
from tango.common import Lazy

from fmit_plugin.common.checks import check_dimensions_match
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.metrics.span_f1 import SpanF1Measure
from fmit_plugin.models.model import Model
from fmit_plugin.modules.conditional_random_field import ConditionalRandomField
from fmit_plugin.modules.tagging_head import TaggingHead, require_bio
from fmit_plugin.modules.token_embedders import TokenEmbedder


@Model.register("crf_tagger")
class CrfTagger(Model):
    """
    Encodes a tweet with a `TokenEmbedder` and an optional `Seq2SeqEncoder`, then tags each word
    with a BIO-constrained CRF, as allennlp-models' `crf_tagger`. `use_crf: false` replaces the
    CRF by an independent softmax per word (the paper's "BERT" baseline). Span F1 is computed
    from the decoded tags directly, with no one-hot "class probabilities" detour.

    Registered as a `Model` with name "crf_tagger".

    # Parameters

    vocab : `Vocabulary`
        Supplies the label set (`label_namespace`).
    text_field_embedder : `TokenEmbedder`
        Words -> vectors, e.g. "pretrained_transformer_mismatched".
    encoder : `Seq2SeqEncoder`, optional (default = `None`, i.e. "pass_through")
        Any allennlp-light encoder ("lstm", "pytorch_transformer", ...) between embedder and tagger.
    label_namespace : `str`, optional (default = `"labels"`)
        The vocabulary namespace of the BIO labels (the one the data loader indexes gold tags in).
    feedforward : `FeedForward`, optional (default = `None`)
        Applied after the encoder.
    label_encoding : `str`, optional (default = `"BIO"`)
        The labels' tag scheme; only "BIO" is accepted (the data, span F1 and entities are BIO).
    include_start_end_transitions : `bool`, optional (default = `True`)
        Learn CRF scores for starting and for ending a sentence with each tag, as AllenNLP does.
    constrain_crf_decoding : `bool`, optional (default = `True`)
        Decode only tag sequences valid under `label_encoding`.
    use_crf : `bool`, optional (default = `True`)
        `False` tags each word by its own softmax (per-word argmax) instead of a CRF.
    dropout : `float`, optional (default = `None`)
        Dropout on the embeddings and on the encoder output.
    verbose_metrics : `bool`, optional (default = `True`)
        Report per-type precision / recall / F1 beside the overall figures.
    crf : `ConditionalRandomField`, optional (default = `None`, i.e. `{"type": "allennlp_light"}`)
        The CRF backend, e.g. `{"type": "pytorch_crf"}`; its other settings come from the keys above.
        Only with `use_crf`.
    max_words : `int`, optional (default = `10_000`)
        Longest tweet accepted, in words; a longer one is an `InputTooLongError` (the predictor's
        line error) at once. Text embedders window long input, so any length works, but the CRF
        decodes word by word, so a line of 200,000 words would hold the run up for a long time.
        `null` removes the limit.
    """

    default_predictor = "sentence_tagger"
    length_limit_reason = "the CRF decodes word by word, so time grows with the length"

    def __init__(
        self,
        vocab: Vocabulary,
        text_field_embedder: TokenEmbedder,
        encoder: Optional[Seq2SeqEncoder] = None,
        label_namespace: str = "labels",
        feedforward: Optional[FeedForward] = None,
        label_encoding: str = "BIO",
        include_start_end_transitions: bool = True,
        constrain_crf_decoding: bool = True,
        use_crf: bool = True,
        dropout: Optional[float] = None,
        verbose_metrics: bool = True,
        crf: Optional[Lazy[ConditionalRandomField]] = None,
        max_words: Optional[int] = 10_000,
    ) -> None:
        super().__init__(vocab, max_words)
        require_bio(label_encoding)
        self.label_namespace = label_namespace
        self.text_field_embedder = text_field_embedder
        self.encoder = encoder or PassThroughEncoder(text_field_embedder.get_output_dim())
        self._feedforward = feedforward
        self.dropout = torch.nn.Dropout(dropout) if dropout else None
        self._verbose_metrics = verbose_metrics
        check_dimensions_match(
            text_field_embedder.get_output_dim(),
            self.encoder.get_input_dim(),
            "text field embedding dim",
            "encoder input dim",
        )
        output_dim = self.encoder.get_output_dim()
        if feedforward is not None:
            check_dimensions_match(
                output_dim, feedforward.get_input_dim(), "encoder output dim", "feedforward input dim"
            )
            output_dim = feedforward.get_output_dim()
        self.tagging_head = TaggingHead(
            output_dim,
            vocab.get_index_to_token_vocabulary(label_namespace),
            use_crf=use_crf,
            label_encoding=label_encoding,
            constrain_crf_decoding=constrain_crf_decoding,
            include_start_end_transitions=include_start_end_transitions,
            crf=crf,
        )
        self._f1_metric = SpanF1Measure()

    def forward(  # type: ignore[override]
        self,
        words: list[list[str]],
        tags: Optional[torch.Tensor] = None,
        metadata: Optional[list[dict[str, Any]]] = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """
        words : the tweets' words; tags : `(batch, words)` gold label ids, optional.
        Extra batch keys (visual objects, when a reader provides them) are ignored.

        Returns `logits`, `mask`, `tags` (predicted ids) and, with gold tags, `loss`.
        """
        self.check_lengths(len(sentence) for sentence in words)
        embedded, mask = self.text_field_embedder(words)  # (batch, words, dim), (batch, words)
        if self.dropout is not None:
            embedded = self.dropout(embedded)
        encoded = self.encoder(embedded, mask)
        if self.dropout is not None:
            encoded = self.dropout(encoded)
        if self._feedforward is not None:
            encoded = self._feedforward(encoded)
        output = self.tagging_head.tag(encoded, mask, words, tags)
        if tags is not None:
            self._f1_metric.add_ids(output["tags"], tags, mask, self.tagging_head.labels)
        return output

    def make_output_human_readable(self, output_dict: dict[str, Any]) -> dict[str, Any]:
        return self.tagging_head.make_output_human_readable(output_dict)

    def get_metrics(self, reset: bool = False) -> dict[str, float]:
        metrics = self._f1_metric.get_metric(reset)
        if not self._verbose_metrics:
            metrics = {name: value for name, value in metrics.items() if "overall" in name}
        return metrics
