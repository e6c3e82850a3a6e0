// FMIT with l = 6 interaction layers (paper Tables 3 and 5).
local common = import 'common.libsonnet';

common.fmit(num_layers=6)
