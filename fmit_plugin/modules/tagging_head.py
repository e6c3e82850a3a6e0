"""From per-word features to BIO tags: emission scores, CRF (or softmax) loss, decoding, span confidence."""
from typing import Any, Optional, cast

import torch
from allennlp_light.modules.conditional_random_field.conditional_random_field import (
    ConditionalRandomField,
    allowed_transitions,
)
from allennlp_light.nn import util
from tango.common.exceptions import ConfigurationError

from fmit_plugin.training.metrics.span_f1 import SpanF1Measure, bio_tags_to_spans

# Score given to forbidden transitions and to labels forced away; the same value allennlp-light's
# Viterbi uses, so confidences agree with the decoded path.
_FORBIDDEN = -10000.0

Entity = tuple[str, int, int, float]


def log_partition(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """
    Forward algorithm: log of the summed score of every tag sequence.
    emissions `# (rows, time, tags)`, mask `# (rows, time)`, transitions `# (tags, tags)`,
    start / end `# (tags,)`; returns `# (rows,)`.

    Written here because allennlp-light's CRF applies its decoding constraints only in Viterbi:
    confidences must come from the same constrained distribution that produced the tags.
    """
    alpha = start.unsqueeze(0) + emissions[:, 0]  # (rows, tags)
    for t in range(1, emissions.shape[1]):
        scores = alpha.unsqueeze(2) + transitions.unsqueeze(0) + emissions[:, t].unsqueeze(1)
        alpha = torch.where(mask[:, t].unsqueeze(1), torch.logsumexp(scores, dim=1), alpha)
    return torch.logsumexp(alpha + end.unsqueeze(0), dim=1)


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
            constraints = allowed_transitions(label_encoding, labels) if constrain_crf_decoding else None
            self.crf = ConditionalRandomField(
                self.num_tags,
                constraints,  # type: ignore[arg-type]  # allennlp-light's hint omits its None default
                include_start_end_transitions=include_start_end_transitions,
            )

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor, tags: Optional[torch.Tensor] = None
    ) -> dict[str, torch.Tensor]:
        """features `# (batch, words, dim)`; returns `logits` and, given gold `tags`, the mean `loss`."""
        logits = self.projection(features)  # (batch, words, tags)
        output = {"logits": logits}
        if tags is not None:
            if self.crf is not None:
                # allennlp-light returns the summed log-likelihood; a per-tweet mean keeps the loss
                # scale independent of batch size and gradient accumulation.
                output["loss"] = -self.crf(logits, tags, mask) / logits.shape[0]
            else:
                output["loss"] = util.sequence_cross_entropy_with_logits(
                    logits, cast(torch.LongTensor, tags), cast(torch.BoolTensor, mask)
                )
        return output

    @torch.no_grad()
    def decode(self, logits: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Best tag ids per sentence (constrained Viterbi, or per-word argmax)."""
        lengths = mask.sum(dim=1).tolist()
        if self.crf is None:
            best = logits.argmax(dim=-1).tolist()
            return [row[:length] for row, length in zip(best, lengths)]
        paths = self.crf.viterbi_tags(logits, cast(torch.BoolTensor, mask))
        return [list(path) for path, _ in cast(list[tuple[list[int], float]], paths)]

    def _constrained_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert self.crf is not None
        k = self.num_tags
        allowed = self.crf._constraint_mask.bool()
        transitions = self.crf.transitions.masked_fill(~allowed[:k, :k], _FORBIDDEN)
        start: torch.Tensor
        end: torch.Tensor
        if self.crf.include_start_end_transitions:
            start, end = self.crf.start_transitions, self.crf.end_transitions
        else:
            start = end = self.crf.transitions.new_zeros(k)
        start = start.masked_fill(~allowed[k, :k], _FORBIDDEN)
        end = end.masked_fill(~allowed[:k, k + 1], _FORBIDDEN)
        return transitions, start, end

    @torch.no_grad()
    def entities(
        self, logits: torch.Tensor, mask: torch.Tensor, predicted: list[list[int]]
    ) -> list[list[Entity]]:
        """(type, start, end exclusive, confidence) for every predicted entity, batched over entities."""
        if self.label_encoding != "BIO":
            raise NotImplementedError("entity spans are read from BIO tags only")
        spans = [bio_tags_to_spans([self.labels[i] for i in path]) for path in predicted]
        rows = [(b, start, end) for b, sentence in enumerate(spans) for _, start, end in sentence]
        if not rows:
            return [[] for _ in predicted]
        batch_size, max_words, _ = logits.shape
        predicted_ids = logits.new_zeros(batch_size, max_words, dtype=torch.long)
        for b, path in enumerate(predicted):
            predicted_ids[b, : len(path)] = torch.tensor(path, dtype=torch.long)
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
            transitions, start, end = (s.float() for s in self._constrained_scores())
            row_mask = mask.index_select(0, row_batch)
            total = log_partition(row_logits, row_mask, transitions, start, end)
            keep = torch.nn.functional.one_hot(row_labels, self.num_tags).bool() | ~in_span.unsqueeze(2)
            forced = log_partition(row_logits.masked_fill(~keep, _FORBIDDEN), row_mask, transitions, start, end)
            confidences = (forced - total).exp()
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
        metric: Optional[SpanF1Measure] = None,
    ) -> dict[str, Any]:
        """The output dict every tagger shares: logits, mask, predicted ids, words, and with gold
        `tags` the loss and a `metric` update from the decoded labels."""
        output: dict[str, Any] = dict(self(features, mask, tags))
        predicted = self.decode(output["logits"], mask)
        output.update({"mask": mask, "tags": predicted, "words": words})
        if tags is not None and metric is not None:
            lengths = mask.sum(dim=1).tolist()
            gold = [[self.labels[i] for i in row[:n]] for row, n in zip(tags.tolist(), lengths)]
            metric([[self.labels[i] for i in path] for path in predicted], gold)
        return output

    def make_output_human_readable(self, output_dict: dict[str, Any]) -> dict[str, Any]:
        """Ids -> labels, plus `entities`: text, type, start, end (exclusive), confidence."""
        entities = self.entities(output_dict["logits"], output_dict["mask"], output_dict["tags"])
        output_dict["entities"] = [
            [
                {"text": " ".join(words[start:end]), "type": label, "start": start, "end": end,
                 "confidence": round(confidence, 6)}
                for label, start, end, confidence in sentence_entities
            ]
            for words, sentence_entities in zip(output_dict["words"], entities)
        ]
        output_dict["tags"] = [[self.labels[i] for i in path] for path in output_dict["tags"]]
        return output_dict
