// FMIT, l = 3 (paper Table 2, the best setting).
local common = import 'common.libsonnet';

common.fmit(num_layers=3)
