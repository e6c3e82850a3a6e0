"""Brute force for the CRF tests: every tag sequence's score, and a plain log-sum-exp over them."""
import itertools
import math


def path_scores(emissions, length, transitions, start, end):
    """Every tag sequence of `length` with its score, by enumeration; emissions `(time, tags)`."""
    scores = {}
    for path in itertools.product(range(emissions.shape[-1]), repeat=length):
        score = float(start[path[0]] + emissions[0, path[0]] + end[path[-1]])
        for t in range(1, length):
            score += float(transitions[path[t - 1], path[t]] + emissions[t, path[t]])
        scores[path] = score
    return scores


def logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))
