// BERT (paper Table 2): the same as BERT-CRF but an independent softmax per word instead of the CRF.
local common = import 'common.libsonnet';

(import 'bert_crf.jsonnet') + {
  model+: { use_crf: false },
}
