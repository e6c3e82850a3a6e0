// FMIT w/o Rel (paper Table 5): a plain Transformer over the same flat lattice, with no head/tail
// positions at all (allennlp-light's pytorch_transformer with no positional encoding).
local common = import 'common.libsonnet';

common.fmit(num_layers=3, encoder={
  type: "pytorch_transformer",
  input_dim: 512,
  num_layers: 3,
  num_attention_heads: 8,
  feedforward_hidden_dim: 2048,
  dropout_prob: 0.2,
})
