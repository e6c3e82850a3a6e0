"""The `ConditionalRandomField` registry: the transition scores of a linear-chain CRF and its training loss."""
from typing import Optional

import torch
from allennlp_light.modules.conditional_random_field.conditional_random_field import allowed_transitions
from tango.common import Registrable

from fmit_plugin.modules.conditional_random_field.inference import FORBIDDEN


def transition_constraints(
    labels: dict[int, str], label_encoding: str, constrain_decoding: bool
) -> Optional[list[tuple[int, int]]]:
    """
    The allowed `(from, to)` tag pairs under `label_encoding` (`len(labels)` stands for START,
    `len(labels) + 1` for END, as in allennlp-light's `allowed_transitions`), or `None` when
    decoding is unconstrained.
    """
    return allowed_transitions(label_encoding, labels) if constrain_decoding else None


class ConditionalRandomField(torch.nn.Module, Registrable):
    """
    A linear-chain CRF over tag ids as `TaggingHead` uses it: a library's parameters and
    log-likelihood, plus the constrained scores that our batched algorithms
    (`conditional_random_field.inference`) decode and compute entity confidences with. So every
    backend decodes the same paths and reports the same confidences for the same transitions;
    backends differ only in how their parameters are stored and initialised and in whose code
    computes the training loss.

    The allowed transitions are computed here from the labels and their encoding (a
    non-persistent buffer, so not part of a state dict): no backend's private state is read.
    Training is unconstrained in both libraries (the normaliser sums over invalid sequences too);
    decoding and confidences are constrained when `constrain_decoding` is true.

    Subclasses take `labels`, `label_encoding`, `constrain_decoding` and
    `include_start_end_transitions`, all supplied by `TaggingHead` (a config's `"crf"` block names
    only the `type`), and call `_register_allowed_transitions` once the module is initialised.
    """

    default_implementation = "allennlp_light"

    _allowed: torch.Tensor

    def _register_allowed_transitions(self, num_tags: int, constraints: Optional[list[tuple[int, int]]]) -> None:
        # (tags + 2, tags + 2): rows / columns num_tags and num_tags + 1 are START and END.
        allowed = torch.ones(num_tags + 2, num_tags + 2, dtype=torch.bool)
        if constraints is not None:
            allowed.fill_(False)
            for i, j in constraints:
                allowed[i, j] = True
        self.register_buffer("_allowed", allowed, persistent=False)

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """
        The log-likelihood of the gold `tags` `(batch, time)` given emissions `(batch, time, tags)`
        and a left-aligned mask `(batch, time)`, summed over the batch (a scalar), unconstrained.
        """
        raise NotImplementedError

    def transition_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The raw transitions `(tags, tags)`, start and end `(tags,)` (zeros where a backend has none)."""
        raise NotImplementedError

    def constrained_scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`transition_scores` with every forbidden transition, start and end scored `FORBIDDEN`."""
        transitions, start, end = self.transition_scores()
        k = transitions.shape[0]
        allowed = self._allowed
        transitions = transitions.masked_fill(~allowed[:k, :k], FORBIDDEN)
        start = start.masked_fill(~allowed[k, :k], FORBIDDEN)
        end = end.masked_fill(~allowed[:k, k + 1], FORBIDDEN)
        return transitions, start, end
