"""From per-word features to BIO tags: emission scores, CRF (or softmax) loss, decoding, span confidence."""
from typing import Any, Optional, cast

import torch
from allennlp_light.modules.conditional_random_field.conditional_random_field import (
    ConditionalRandomField,
    allowed_transitions,
)
from allennlp_light.nn import util
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.span_utils import bio_tags_to_spans

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


def viterbi_paths(
    emissions: torch.Tensor,
    lengths: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """
    Best tag sequences of a batch at once, on the emissions' device: emissions `# (batch, time, tags)`,
    lengths `# (batch,)` (each sequence is a prefix), constrained transitions `# (tags, tags)` and
    start / end `# (tags,)`; returns `# (batch, time)` tag ids (anything past a sequence's length).

    The same numbers as allennlp-light's `viterbi_tags`, which decodes one sentence at a time with a
    host read per time step: the same lattice with START / END states and sentinel steps scored
    -10000, the same additions in the same order and the same `topk`, so the same paths; but a
    batch is a loop over time of a few batched operations and no host-device synchronisation.
    """
    batch_size, max_length, num_tags = emissions.shape
    device = emissions.device
    emissions = emissions.float()
    start_tag, end_tag = num_tags, num_tags + 1
    states = num_tags + 2
    augmented = torch.full((states, states), _FORBIDDEN, device=device)
    augmented[:num_tags, :num_tags] = transitions
    augmented[start_tag, :num_tags] = start
    augmented[:num_tags, end_tag] = end
    # (batch, time + 2, states): the START sentinel, the emissions, the END sentinel at step length + 1.
    steps = torch.full((batch_size, max_length + 2, states), _FORBIDDEN, device=device)
    steps[:, 0, start_tag] = 0.0
    steps[:, 1 : max_length + 1, :num_tags] = emissions
    rows = torch.arange(batch_size, device=device)
    lengths = lengths.long()
    end_row = torch.full((states,), _FORBIDDEN, device=device)
    end_row[end_tag] = 0.0
    steps[rows, lengths + 1] = end_row
    alpha = steps[:, 0]  # (batch, states)
    backpointers = []
    identity = torch.arange(states, device=device).expand(batch_size, states)
    for step in range(1, max_length + 2):
        # (batch, previous state, state) -> best previous state per state
        best, previous = torch.topk(alpha.unsqueeze(2) + augmented, k=1, dim=1)
        active = (step <= lengths + 1).unsqueeze(1)  # (batch, 1)
        alpha = torch.where(active, steps[:, step] + best.squeeze(1), alpha)
        # Finished sequences keep their state, so every backtrace can start from the last step.
        backpointers.append(torch.where(active, previous.squeeze(1), identity))
    state = torch.topk(alpha, k=1, dim=1)[1].squeeze(1)  # (batch,)
    path = []
    for pointers in reversed(backpointers[1:]):
        state = pointers.gather(1, state.unsqueeze(1)).squeeze(1)
        path.append(state)
    path.reverse()
    # (batch, time); tags of real steps are < num_tags
    return torch.stack(path, dim=1) if path else torch.zeros(batch_size, 0, dtype=torch.long, device=device)


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
    def best_paths(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Best tag ids `# (batch, words)` (constrained Viterbi, or per-word argmax), computed on the
        logits' device and left there; ids past a sentence's length mean nothing. `mask` is left-aligned."""
        if self.crf is None:
            return logits.argmax(dim=-1)
        return viterbi_paths(logits, mask.sum(dim=1), *self._constrained_scores())

    @staticmethod
    def rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """`# (batch, words)` ids -> each sentence's ids, read back in one transfer."""
        lengths = mask.sum(dim=1)
        rows = torch.cat([lengths.unsqueeze(1), ids.to(lengths.dtype)], dim=1).tolist()
        return [row[1 : 1 + row[0]] for row in rows]

    def decode(self, logits: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """`best_paths` as one list of tag ids per sentence."""
        return self.rows(self.best_paths(logits, mask), mask)

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
        self, logits: torch.Tensor, mask: torch.Tensor, predicted: list[list[int]],
        predicted_ids: Optional[torch.Tensor] = None,
    ) -> list[list[Entity]]:
        """(type, start, end exclusive, confidence) for every predicted entity, batched over entities;
        `predicted_ids` `# (batch, words)` is `predicted` on the logits' device, if at hand."""
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
    ) -> dict[str, Any]:
        """The output dict every tagger shares: logits, mask, the predicted ids `# (batch, words)`
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
