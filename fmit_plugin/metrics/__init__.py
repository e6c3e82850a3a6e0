"""Metrics the models update: span F1 over BIO tags."""

from fmit_plugin.metrics.span_f1 import SpanCounts, SpanF1Measure

__all__ = ["SpanCounts", "SpanF1Measure"]
