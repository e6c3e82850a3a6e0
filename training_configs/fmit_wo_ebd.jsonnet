// FMIT w/o EBD (paper Table 5): lambda = 0, no entity boundary detection branch.
local common = import 'common.libsonnet';

common.fmit(num_layers=3, boundary_weight=0.0)
