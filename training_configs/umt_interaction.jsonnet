// Baseline: FMIT's model with its flat lattice interaction replaced by UMT's multimodal interaction
// (Yu et al., ACL 2020: text self-attention, text-to-image and image-to-text cross-attention and a
// visual gate, one layer of each, at UMT's published width: 768, 12 heads, feed-forward 3072).
// Everything else is fmit.jsonnet's (lattice d = 512, the entity boundary detection branch with a
// flat lattice transformer, l = 3, over the text), so only the interaction differs.
local common = import 'common.libsonnet';

local umt = {
  type: "umt_interaction",
  input_dim: 512,
  hidden_dim: 768,
  num_attention_heads: 12,
  feedforward_hidden_dim: 3072,
  dropout_prob: 0.1,
};

common.fmit(encoder=umt) + {
  model+: { boundary_encoder: common.fmit_encoder(num_layers=3) },
}
