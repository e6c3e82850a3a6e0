"""
Batched inference over a linear-chain CRF: the forward algorithm, constrained Viterbi and exact span
probabilities. Every CRF backend (`ConditionalRandomField`) is decoded and scored here, so the
algorithms are written once and give the same numbers whatever library holds the parameters.

Why not a library's own: allennlp-light's `viterbi_tags` and torchcrf's `decode` both decode one
sentence at a time (allennlp-light reads the device back every time step, torchcrf backtracks in
Python lists on the host); torchcrf applies no BIO constraints at all; neither gives marginals,
let alone the probability of a multi-word span's labels; and both apply constraints only (or never)
in decoding, not in their training likelihood, so a confidence that agrees with the decoded,
constrained tags needs a constrained forward algorithm of its own. Here a batch is one loop over
time of a few batched operations, with no host-device synchronisation.

Scores come as emissions `(rows, time, tags)` plus `ConditionalRandomField.constrained_scores()`:
transitions `(tags, tags)` and start / end `(tags,)` with forbidden moves scored `FORBIDDEN`.
"""
import torch

# Score given to forbidden transitions and to labels forced away; the same value allennlp-light's
# Viterbi uses, so confidences agree with the decoded path and paths agree with allennlp-light's.
FORBIDDEN = -10000.0


def log_partition(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """
    Forward algorithm: log of the summed score of every tag sequence.
    emissions `(rows, time, tags)`, mask `(rows, time)` (left-aligned), transitions `(tags, tags)`,
    start / end `(tags,)`; returns `(rows,)`.
    """
    alpha = start.unsqueeze(0) + emissions[:, 0]  # (rows, tags)
    for t in range(1, emissions.shape[1]):
        scores = alpha.unsqueeze(2) + transitions.unsqueeze(0) + emissions[:, t].unsqueeze(1)
        alpha = torch.where(mask[:, t].unsqueeze(1), torch.logsumexp(scores, dim=1), alpha)
    return torch.logsumexp(alpha + end.unsqueeze(0), dim=1)


def span_log_probabilities(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    in_span: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """
    log P(every word of the span carries its label) per row, exactly: log Z with the span's labels
    forced (all other labels of its words scored `FORBIDDEN`) minus log Z. emissions `(rows, time, tags)`,
    mask `(rows, time)`, labels `(rows, time)` tag ids, in_span `(rows, time)` bool (the span's
    words), scores as `log_partition`; returns `(rows,)`.

    Two forward passes rather than forward-backward: forward-backward gives per-word (and per
    transition) marginals, and a multi-word span's probability is not their product.
    """
    total = log_partition(emissions, mask, transitions, start, end)
    # (rows, time, tags): labels left open, i.e. the span's own label, or any label outside the span
    keep = torch.nn.functional.one_hot(labels, emissions.shape[-1]).bool() | ~in_span.unsqueeze(2)
    forced = log_partition(emissions.masked_fill(~keep, FORBIDDEN), mask, transitions, start, end)
    return forced - total


def viterbi_paths(
    emissions: torch.Tensor,
    lengths: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """
    Best tag sequences of a batch at once, on the emissions' device: emissions `(batch, time, tags)`,
    lengths `(batch,)` (each sequence is a prefix), constrained transitions `(tags, tags)` and
    start / end `(tags,)`; returns `(batch, time)` tag ids (anything past a sequence's length).

    The same numbers as allennlp-light's `viterbi_tags`: the same lattice with START / END states and
    sentinel steps scored -10000, the same additions in the same order and the same `topk`, so the
    same paths (ties included).
    """
    batch_size, max_length, num_tags = emissions.shape
    device = emissions.device
    emissions = emissions.float()
    start_tag, end_tag = num_tags, num_tags + 1
    states = num_tags + 2
    augmented = torch.full((states, states), FORBIDDEN, device=device)
    augmented[:num_tags, :num_tags] = transitions
    augmented[start_tag, :num_tags] = start
    augmented[:num_tags, end_tag] = end
    # (batch, time + 2, states): the START sentinel, the emissions, the END sentinel at step length + 1.
    steps = torch.full((batch_size, max_length + 2, states), FORBIDDEN, device=device)
    steps[:, 0, start_tag] = 0.0
    steps[:, 1 : max_length + 1, :num_tags] = emissions
    rows = torch.arange(batch_size, device=device)
    lengths = lengths.long()
    end_row = torch.full((states,), FORBIDDEN, device=device)
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
