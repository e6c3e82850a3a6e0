"""Training metrics."""

from fmit_plugin.training.metrics.span_f1 import SpanCounts, SpanF1Measure, bio_tags_to_spans

__all__ = ["SpanCounts", "SpanF1Measure", "bio_tags_to_spans"]
