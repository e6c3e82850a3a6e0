"""pytorch-crf's `torchcrf.CRF` as a CRF backend."""
import torch
import torchcrf
from tango.common.exceptions import ConfigurationError

from fmit_plugin.modules.conditional_random_field.conditional_random_field import (
    ConditionalRandomField,
    transition_constraints,
)


@ConditionalRandomField.register("pytorch_crf")
class PytorchCrf(ConditionalRandomField, torchcrf.CRF):
    """
    `torchcrf.CRF(num_tags, batch_first=True)` itself (a subclass), so its parameters sit under the
    head's `crf` with the same names as allennlp-light's: `transitions`, `start_transitions`,
    `end_transitions` (initialised uniformly in [-0.1, 0.1], torchcrf's choice). The
    log-likelihood is torchcrf's own `forward`; decoding and confidences go through our batched,
    BIO-constrained algorithms (`conditional_random_field.inference`) with the allowed transitions
    applied to its scores. torchcrf's `decode` is not used: it backtracks one sentence at a time in
    Python on the host, and knows no constraints, so it could return invalid BIO sequences.

    torchcrf needs every sequence to have at least one word (the first mask column all true), and
    checks and asserts that on the host: three device synchronisations per loss, where the default
    backend's loss has none.

    Registered as a `ConditionalRandomField` with name "pytorch_crf".

    # Parameters

    labels : `dict[int, str]`
        Tag id -> label; supplied by `TaggingHead`.
    label_encoding : `str`, optional (default = `"BIO"`)
        `"BIO"` or `"BIOUL"`, for the allowed transitions.
    constrain_decoding : `bool`, optional (default = `True`)
        Decode (and score confidences over) only tag sequences valid under `label_encoding`.
    include_start_end_transitions : `bool`, optional (default = `True`)
        Must be true: torchcrf always learns start and end transitions.
    """

    # torchcrf's parameters, declared for type checkers (torchcrf ships no type hints).
    transitions: torch.nn.Parameter
    start_transitions: torch.nn.Parameter
    end_transitions: torch.nn.Parameter

    def __init__(
        self,
        labels: dict[int, str],
        label_encoding: str = "BIO",
        constrain_decoding: bool = True,
        include_start_end_transitions: bool = True,
    ) -> None:
        if not include_start_end_transitions:
            raise ConfigurationError(
                "include_start_end_transitions = false is not available with crf type 'pytorch_crf' "
                "(torchcrf.CRF always learns start and end transitions): set include_start_end_transitions "
                "to true, or use crf type 'allennlp_light'"
            )
        constraints = transition_constraints(labels, label_encoding, constrain_decoding)
        torchcrf.CRF.__init__(self, len(labels), batch_first=True)
        self._register_allowed_transitions(len(labels), constraints)

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # torchcrf selects with `torch.where` on the mask, which must be bool.
        return self(emissions, tags, mask.bool(), reduction="sum")

    def transition_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.transitions, self.start_transitions, self.end_transitions
