// BERT-CRF (paper Table 2): a fine-tuned transformer, one linear layer, a BIO-constrained CRF.
local common = import 'common.libsonnet';

common.data + {
  model: {
    type: "crf_tagger",
    text_field_embedder: common.text_embedder(),
    label_encoding: "BIO",
    dropout: 0.2,
  },
  trainer: common.trainer(),
}
