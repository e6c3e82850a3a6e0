// FMIT with l = 1 interaction layer (paper Tables 3 and 5).
local common = import 'common.libsonnet';

common.fmit(num_layers=1)
