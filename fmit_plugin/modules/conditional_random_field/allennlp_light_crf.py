"""allennlp-light's `ConditionalRandomField` as a CRF backend (the default)."""
import torch
from allennlp_light.modules.conditional_random_field.conditional_random_field import (
    ConditionalRandomField as AllennlpLightConditionalRandomField,
)

from fmit_plugin.modules.conditional_random_field.conditional_random_field import (
    ConditionalRandomField,
    transition_constraints,
)


@ConditionalRandomField.register("allennlp_light")
class AllennlpLightCrf(ConditionalRandomField, AllennlpLightConditionalRandomField):
    """
    allennlp-light's CRF itself (a subclass, not a wrapper), so its parameters keep their names:
    `transitions`, `start_transitions`, `end_transitions` and its `_constraint_mask` sit directly
    under the head's `crf`, exactly as in archives written before CRF backends were registrable,
    and those archives load unchanged. Its log-likelihood is allennlp-light's `forward`; its
    `viterbi_tags` still works but is not what `TaggingHead` decodes with (see
    `conditional_random_field.inference`).

    Registered as a `ConditionalRandomField` with name "allennlp_light".

    # Parameters

    labels : `dict[int, str]`
        Tag id -> label; supplied by `TaggingHead`.
    label_encoding : `str`, optional (default = `"BIO"`)
        `"BIO"` or `"BIOUL"`, for the allowed transitions.
    constrain_decoding : `bool`, optional (default = `True`)
        Decode (and score confidences over) only tag sequences valid under `label_encoding`;
        allennlp-light also stores the constraints, as its `_constraint_mask`.
    include_start_end_transitions : `bool`, optional (default = `True`)
        Learn start and end transition scores; without them they are zero.
    """

    def __init__(
        self,
        labels: dict[int, str],
        label_encoding: str = "BIO",
        constrain_decoding: bool = True,
        include_start_end_transitions: bool = True,
    ) -> None:
        constraints = transition_constraints(labels, label_encoding, constrain_decoding)
        AllennlpLightConditionalRandomField.__init__(
            self,
            len(labels),
            constraints,  # type: ignore[arg-type]  # allennlp-light's hint omits its None default
            include_start_end_transitions=include_start_end_transitions,
        )
        self._register_allowed_transitions(len(labels), constraints)

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self(emissions, tags, mask)

    def transition_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.include_start_end_transitions:
            return self.transitions, self.start_transitions, self.end_transitions
        zeros = self.transitions.new_zeros(self.num_tags)
        return self.transitions, zeros, zeros
