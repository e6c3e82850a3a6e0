from fmit_plugin.modules.flat_lattice import FlatLattice, LatticeProjection, build_flat_lattice, word_cells
from fmit_plugin.modules.flat_lattice_transformer import FlatLatticeTransformer, interaction_parameter_count
from fmit_plugin.modules.relative_position_fusion import RelativePositionFusion
from fmit_plugin.modules.token_embedders import PretrainedTransformerMismatchedEmbedder, TokenEmbedder
from fmit_plugin.modules.umt_interaction import UmtInteraction

__all__ = [
    "FlatLattice",
    "FlatLatticeTransformer",
    "LatticeProjection",
    "PretrainedTransformerMismatchedEmbedder",
    "RelativePositionFusion",
    "TokenEmbedder",
    "UmtInteraction",
    "build_flat_lattice",
    "interaction_parameter_count",
    "word_cells",
]
