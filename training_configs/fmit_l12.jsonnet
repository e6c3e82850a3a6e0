// FMIT with l = 12 interaction layers (paper Table 5).
local common = import 'common.libsonnet';

common.fmit(num_layers=12)
