from fmit_plugin.predictors.predictor import Predictor, SentenceTaggerPredictor

__all__ = ["Predictor", "SentenceTaggerPredictor"]
