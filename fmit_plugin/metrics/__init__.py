"""Metrics the models update: span F1 over BIO tags, and grounded MNER F1 (span, type and box)."""

from fmit_plugin.metrics.gmner_f1 import GmnerF1Measure
from fmit_plugin.metrics.span_f1 import SpanCounts, SpanF1Measure

__all__ = ["GmnerF1Measure", "SpanCounts", "SpanF1Measure"]
