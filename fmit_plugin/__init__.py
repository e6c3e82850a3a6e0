"""
fmit-plugin: multi-modal named entity recognition (FMIT, Lu et al., COLING 2022) as an
AllenNLP-style plugin. Importing the package registers its readers, embedders, models,
trainers, predictors and subcommands.
"""
from fmit_plugin import commands as _commands  # noqa: F401
from fmit_plugin import modules, predictors  # noqa: F401
from fmit_plugin.commands import (  # noqa: F401
    evaluate,
    extract_visual_objects,
    model_card,
    predict,
    print_results,
    serve,
    train,
)
from fmit_plugin.data import dataset_reader, twitter_gmner, twitter_mner  # noqa: F401
from fmit_plugin.models import crf_tagger, fmit  # noqa: F401
from fmit_plugin.predictors import Predictor
from fmit_plugin.training import optimizers, trainer  # noqa: F401
from fmit_plugin.version import VERSION as __version__  # noqa: F401
from fmit_plugin.vision import proposals  # noqa: F401

__all__ = ["Predictor"]
