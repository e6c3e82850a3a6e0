// Grounded MNER (docs/model.md, "Grounded entities"): FMIT with the entity_grounding head, on Twitter-GMNER by
// default (../shared/data/twitter-gmner: txt/{train,dev,test}.txt, xml/ the entity boxes). The visual objects are
// class-agnostic candidates spanning the whole sentence: PROPOSALS (a JSON-lines file of boxes per image), else a
// zero-shot detector asked generic queries (GROUNDER_MODEL). Beside common.libsonnet's variables:
//   ENTITY_BOXES_DIR  folder of <IMGID>.xml                      (default DATA_DIR/xml)
//   PROPOSALS         JSON-lines candidates for the "proposals" grounder (default: detector_proposals)
//   ENCODER           "pytorch_transformer" for the w/o Rel row  (default: the flat lattice transformer)
//   GROUNDING_WEIGHT  weight of the grounding loss; 0 trains the same model without the head (default 1.0)
//   TYPE_FROM_REGION  0: entities keep the tagger's types instead of the head's (default 1, type_from_region)
//   NAME_PROJECTION_DIM  size of the name-to-appearance term; 0 leaves it out (default 32, name_projection_dim)
//   NAME_LR           learning rate of that term's layers (default 2e-3: at the base 2e-4 they are far from fitted
//                     in the epochs the rest of the model needs; docs/model.md)
//   NUM_LAYERS        encoder layers (default 3);  BOUNDARY_WEIGHT  lambda of EBD, 0 removes it (default 0.25)
local common = import 'common.libsonnet';
local env = common.env;
local env_number = common.env_number;

local config = common + {
  data_dir:: env("DATA_DIR", "../shared/data/twitter-gmner"),
  proposals:: env("PROPOSALS", ""),
  grounder:: if $.proposals != "" then { type: "proposals", path: $.proposals }
             else { type: "detector_proposals", model_name: env("GROUNDER_MODEL", "google/owlv2-base-patch16-ensemble") },
  dataset_reader:: super.dataset_reader + {
    type: "twitter_gmner",
    entity_boxes_dir: env("ENTITY_BOXES_DIR", $.data_dir + "/xml"),
  },
  data:: super.data + {
    train_data_path: env("TRAIN_DATA_PATH", $.data_dir + "/txt/train.txt"),
    validation_data_path: env("VALIDATION_DATA_PATH", $.data_dir + "/txt/dev.txt"),
    test_data_path: env("TEST_DATA_PATH", $.data_dir + "/txt/test.txt"),
  },
};
local weight = env_number("GROUNDING_WEIGHT", 1.0);
local layers = env_number("NUM_LAYERS", 3);
local name_dim = env_number("NAME_PROJECTION_DIM", 32);
local encoder = if env("ENCODER", "") == "pytorch_transformer" then {
  type: "pytorch_transformer", input_dim: 512, num_layers: layers, num_attention_heads: 8,
  feedforward_hidden_dim: 2048, dropout_prob: 0.2,
} else config.fmit_encoder(layers);

config.fmit(num_layers=layers, encoder=encoder, boundary_weight=env_number("BOUNDARY_WEIGHT", 0.25)) + {
  model+: if weight > 0 then {
    entity_grounding: {
      loss_weight: weight,
      type_from_region: env("TYPE_FROM_REGION", "1") != "0",
      name_projection_dim: name_dim,
    },
  } else {},
  trainer+: {
    validation_metric: if weight > 0 then "+gmner-f1" else "+f1-measure-overall",
  } + if weight > 0 && name_dim > 0 then {
    optimizer+: { parameter_groups+: [[["^entity_grounding\\.(name_query|appearance_norm|appearance_key)\\."],
                                       { lr: env_number("NAME_LR", 2e-3) }]] },
  } else {},
}
