"""The visual side of FMIT: images -> noun phrases -> grounded regions -> backbone features, cached."""
