"""From per-word features to BIO tags: emission scores, CRF (or softmax) loss, decoding, span confidence."""
from typing import Any, Optional, cast

import torch
from allennlp_light.nn import util
from tango.common import Lazy
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.span_utils import bio_tags_to_spans
from fmit_plugin.modules.conditional_random_field import (
    AllennlpLightCrf,
    ConditionalRandomField,
    span_log_probabilities,
    viterbi_paths,
)

Entity = tuple[str, int, int, float]


def require_bio(label_encoding: str) -> None:
    """Taggers report span F1 and entities from BIO tags: other encodings are a config error."""
    if label_encoding != "BIO":
        raise ConfigurationError(
            f"label_encoding must be 'BIO' (the Twitter data, span F1 and entity confidences use BIO), "
            f"got '{label_encoding}'"
        )


class TaggingHead(torch.nn.Module):
    """
    Linear emissions over word features, then a BIO-constrained CRF (`use_crf=True`) or an
    independent softmax per word (the paper's plain "BERT" row). Shared by `crf_tagger` and
    `fmit` so both decode, score and report confidence identically.

    The CRF is a registrable `ConditionalRandomField` (`crf`, default "allennlp_light"; also
    "pytorch_crf"): it gives the training loss and its constrained transition scores, which every
    backend decodes with the same batched Viterbi and scores with the same forward algorithm
    (`conditional_random_field.inference`). The head itself only projects, asks for the loss,
    decodes and formats entities.

    Entity confidence is the model's probability that the predicted span carries exactly its
    predicted labels: for the CRF, exp(log Z with the span's labels forced - log Z), both computed
    by the constrained forward algorithm (exact, batched over all entities of a batch); for the
    softmax, the product of the span's per-word probabilities.
    """

    def __init__(
        self,
        input_dim: int,
        labels: dict[int, str],
        use_crf: bool = True,
        label_encoding: str = "BIO",
        constrain_crf_decoding: bool = True,
        include_start_end_transitions: bool = True,
        crf: Optional[Lazy[ConditionalRandomField]] = None,
    ) -> None:
        super().__init__()
        if label_encoding not in ("BIO", "BIOUL"):
            raise ConfigurationError(f"label_encoding must be 'BIO' or 'BIOUL', got '{label_encoding}'")
        self.label_encoding = label_encoding
        self.labels = labels
        self.num_tags = len(labels)
        self.use_crf = use_crf
        self.projection = torch.nn.Linear(input_dim, self.num_tags)
        self.crf: Optional[ConditionalRandomField] = None
        if use_crf:
            self.crf = (crf or Lazy(AllennlpLightCrf)).construct(
                labels=labels,
                label_encoding=label_encoding,
                constrain_decoding=constrain_crf_decoding,
                include_start_end_transitions=include_start_end_transitions,
            )
        elif crf is not None:
            raise ConfigurationError(
                "crf is given but use_crf is false (the softmax head has no CRF): remove crf, or set use_crf "
                "to true"
            )

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor, tags: Optional[torch.Tensor] = None
    ) -> dict[str, torch.Tensor]:
        """features `(batch, words, dim)`; returns `logits` and, given gold `tags`, the mean `loss`."""
        logits = self.projection(features)  # (batch, words, tags)
        output = {"logits": logits}
        if tags is not None:
            if self.crf is not None:
                # The CRF returns the summed log-likelihood; a per-tweet mean keeps the loss
                # scale independent of batch size and gradient accumulation.
                output["loss"] = -self.crf.log_likelihood(logits, tags, mask) / logits.shape[0]
            else:
                output["loss"] = util.sequence_cross_entropy_with_logits(
                    logits, cast(torch.LongTensor, tags), cast(torch.BoolTensor, mask)
                )
        return output

    @torch.no_grad()
    def best_paths(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Best tag ids `(batch, words)` (constrained Viterbi, or per-word argmax), computed on the
        logits' device and left there; ids past a sentence's length mean nothing. `mask` is left-aligned."""
        if self.crf is None:
            return logits.argmax(dim=-1)
        return viterbi_paths(logits, mask.sum(dim=1), *self.crf.constrained_scores())

    @staticmethod
    def rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """`(batch, words)` ids -> each sentence's ids, read back in one transfer."""
        lengths = mask.sum(dim=1)
        rows = torch.cat([lengths.unsqueeze(1), ids.to(lengths.dtype)], dim=1).tolist()
        return [row[1 : 1 + row[0]] for row in rows]

    def decode(self, logits: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """`best_paths` as one list of tag ids per sentence."""
        return self.rows(self.best_paths(logits, mask), mask)

    @torch.no_grad()
    def entities(
        self, logits: torch.Tensor, mask: torch.Tensor, predicted: list[list[int]],
        predicted_ids: Optional[torch.Tensor] = None,
    ) -> list[list[Entity]]:
        """(type, start, end exclusive, confidence) for every predicted entity, batched over entities;
        `predicted_ids` `(batch, words)` is `predicted` on the logits' device, if at hand."""
        if self.label_encoding != "BIO":
            raise NotImplementedError("entity spans are read from BIO tags only")
        spans = [bio_tags_to_spans([self.labels[i] for i in path]) for path in predicted]
        rows = [(b, start, end) for b, sentence in enumerate(spans) for _, start, end in sentence]
        if not rows:
            return [[] for _ in predicted]
        batch_size, max_words, _ = logits.shape
        if predicted_ids is None:
            predicted_ids = logits.new_zeros(batch_size, max_words, dtype=torch.long)
            for b, path in enumerate(predicted):
                predicted_ids[b, : len(path)] = torch.tensor(path, dtype=torch.long)
        # Ids past a sentence's end may be Viterbi's sentinel states, out of range for one_hot.
        predicted_ids = predicted_ids.clamp(0, self.num_tags - 1)
        device = logits.device
        row_batch = torch.tensor([b for b, _, _ in rows], device=device)
        positions = torch.arange(max_words, device=device).unsqueeze(0)  # (1, words)
        starts = torch.tensor([s for _, s, _ in rows], device=device).unsqueeze(1)
        ends = torch.tensor([e for _, _, e in rows], device=device).unsqueeze(1)
        in_span = (positions >= starts) & (positions < ends)  # (entities, words)
        row_logits = logits.float().index_select(0, row_batch)  # (entities, words, tags)
        row_labels = predicted_ids.index_select(0, row_batch)
        if self.crf is None:
            log_probs = torch.log_softmax(row_logits, dim=-1).gather(2, row_labels.unsqueeze(2)).squeeze(2)
            confidences = (log_probs * in_span).sum(dim=1).exp()
        else:
            scores = (s.float() for s in self.crf.constrained_scores())
            row_mask = mask.index_select(0, row_batch)
            confidences = span_log_probabilities(row_logits, row_mask, row_labels, in_span, *scores).exp()
        values = confidences.clamp(0.0, 1.0).tolist()
        result: list[list[Entity]] = [[] for _ in predicted]
        index = 0
        for b, sentence in enumerate(spans):
            for label, start_word, end_word in sentence:
                result[b].append((label, start_word, end_word, values[index]))
                index += 1
        return result

    def tag(
        self,
        features: torch.Tensor,
        mask: torch.Tensor,
        words: list[list[str]],
        tags: Optional[torch.Tensor] = None,
    ) -> dict[str, Any]:
        """The output dict every tagger shares: logits, mask, the predicted ids `(batch, words)`
        (`tags`, left on the device), words, and with gold `tags` the loss. Models update their own metrics
        from `tags`.
        Nothing is read back to the host here: `make_output_human_readable` does that."""
        output: dict[str, Any] = dict(self(features, mask, tags))
        predicted = self.best_paths(output["logits"], mask)
        output.update({"mask": mask, "tags": predicted, "words": words})
        return output

    def make_output_human_readable(self, output_dict: dict[str, Any]) -> dict[str, Any]:
        """Ids -> labels per sentence, plus `entities`: text, type, start, end (exclusive), confidence."""
        predicted_ids = output_dict["tags"]
        predicted = self.rows(predicted_ids, output_dict["mask"])
        entities = self.entities(output_dict["logits"], output_dict["mask"], predicted, predicted_ids)
        output_dict["entities"] = [
            [
                {"text": " ".join(words[start:end]), "type": label, "start": start, "end": end,
                 "confidence": round(confidence, 6)}
                for label, start, end, confidence in sentence_entities
            ]
            for words, sentence_entities in zip(output_dict["words"], entities)
        ]
        output_dict["tags"] = [[self.labels[i] for i in path] for path in predicted]
        return output_dict
