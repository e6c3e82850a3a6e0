from fmit_plugin.modules.conditional_random_field.allennlp_light_crf import AllennlpLightCrf
from fmit_plugin.modules.conditional_random_field.conditional_random_field import (
    ConditionalRandomField,
    transition_constraints,
)
from fmit_plugin.modules.conditional_random_field.inference import (
    FORBIDDEN,
    log_partition,
    span_log_probabilities,
    viterbi_paths,
)
from fmit_plugin.modules.conditional_random_field.pytorch_crf import PytorchCrf

__all__ = [
    "FORBIDDEN",
    "AllennlpLightCrf",
    "ConditionalRandomField",
    "PytorchCrf",
    "log_partition",
    "span_log_probabilities",
    "transition_constraints",
    "viterbi_paths",
]
