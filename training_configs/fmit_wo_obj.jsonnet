// FMIT w/o Obj (paper Table 5): instead of grounded objects, the 7 x 7 average-segmented blocks of the
// backbone's last feature map (49 objects + the whole image), each spanning the whole sentence.
local common = import 'common.libsonnet';

(common + {
  reader_visual_objects:: common.visual_objects(grounder={ type: "grid", k: 7 }, max_objects=50),
}).fmit(num_layers=3)
