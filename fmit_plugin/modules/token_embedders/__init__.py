from fmit_plugin.modules.token_embedders.pretrained_transformer_mismatched_embedder import (
    PretrainedTransformerMismatchedEmbedder,
)
from fmit_plugin.modules.token_embedders.token_embedder import TokenEmbedder

__all__ = ["PretrainedTransformerMismatchedEmbedder", "TokenEmbedder"]
