"""The `Predictor` registry and the JSON-lines tagger predictor."""
import re
from typing import Any, Optional

import torch
from tango.common import Registrable

from fmit_plugin.common.device import move_to_device
from fmit_plugin.data.data_loader import collate
from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.tweet_tokenizer import tokenize_tweet
from fmit_plugin.models.model import Model

# JSON's "\\ud800" escape decodes to a lone surrogate: a str no tokenizer (and no UTF-8 file) accepts.
# A surrogate code point left in a Python str is always lone (json.loads joins valid pairs).
_SURROGATE = re.compile("[\ud800-\udfff]")


def model_safe_word(word: str) -> str:
    """`word` with lone surrogates replaced by U+FFFD, the replacement character, for the model."""
    return _SURROGATE.sub("\ufffd", word)


class Predictor(Registrable):
    """Wraps a trained `Model` and its `DatasetReader` to go from JSON to JSON."""

    def __init__(self, model: Model, dataset_reader: DatasetReader) -> None:
        self.model = model
        self.dataset_reader = dataset_reader
        # As AllenNLP's predictor: no dropout at prediction time, whatever mode the model was left in.
        self.model.eval()

    def json_to_instance(self, json_dict: dict[str, Any]) -> TaggingInstance:
        raise NotImplementedError

    def predict_instances(self, instances: list[TaggingInstance]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def predict_batch_json(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.predict_instances([self.json_to_instance(item) for item in inputs])


@Predictor.register("sentence_tagger")
class SentenceTaggerPredictor(Predictor):
    """
    Input lines: `{"tokens": ["I", "love", "Paris"]}` or `{"sentence": "I love Paris"}` (split
    with the tweet tokenizer), optionally with `"image"` (a path, or an image id looked up in the
    reader's `image_dir`). Output: `tokens`, `tags`, and `entities`, each with `text`, `type`,
    `start`, `end` (word indices, end exclusive) and `confidence`; a model with an `entity_grounding`
    block adds each entity's `box` (`[x0, y0, x1, y1]` in image pixels, or null: not in the image) and
    `box_confidence`. An `"id"` key is echoed. What went
    wrong without stopping the line (an image that could not be used...) is listed in `"warnings"`,
    present only when there is something to say.

    Registered as a `Predictor` with name "sentence_tagger".
    """

    def json_to_instance(self, json_dict: dict[str, Any]) -> TaggingInstance:
        if not isinstance(json_dict, dict):
            raise ValueError(f"expected a JSON object, got {type(json_dict).__name__}")
        if "tokens" in json_dict:
            tokens = json_dict["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise ValueError('"tokens" must be a list of strings')
        elif "sentence" in json_dict:
            if not isinstance(json_dict["sentence"], str):
                raise ValueError('"sentence" must be a string')
            tokens = tokenize_tweet(json_dict["sentence"])
        else:
            raise ValueError('each line needs "tokens" (a list of strings) or "sentence" (a string)')
        image = json_dict.get("image")
        if image is not None and not isinstance(image, str):
            raise ValueError('"image" must be a string (a path or an image id)')
        # The model sees lone surrogates as U+FFFD; the answer echoes the tokens as given.
        words = [model_safe_word(token) for token in tokens]
        instance = self.dataset_reader.text_to_instance(words, image=image)
        if words != tokens:
            instance.metadata["tokens"] = list(tokens)
        if "id" in json_dict:
            instance.metadata["id"] = json_dict["id"]
        return instance

    def predict_instances(self, instances: list[TaggingInstance]) -> list[dict[str, Any]]:
        results: list[Optional[dict[str, Any]]] = [None] * len(instances)
        # An empty tweet has nothing to tag; it gets an empty answer rather than a model call.
        nonempty = [i for i, instance in enumerate(instances) if len(instance) > 0]
        if nonempty:
            batch = collate([_without_tags(instances[i]) for i in nonempty])
            with torch.inference_mode():
                output = self.model(**move_to_device(batch, self.model.device()))
                output = self.model.make_output_human_readable(output)
            for row, i in enumerate(nonempty):
                results[i] = {"tags": output["tags"][row], "entities": output["entities"][row]}
        answers = []
        for instance, result in zip(instances, results):
            answer: dict[str, Any] = {}
            if "id" in instance.metadata:
                answer["id"] = instance.metadata["id"]
            answer["tokens"] = instance.metadata.get("tokens", instance.words)
            answer.update(result or {"tags": [], "entities": []})
            if instance.image_path or instance.image_id:
                answer["image"] = instance.image_path or instance.image_id
            if instance.visual is not None:
                answer["objects"] = visual_objects_json(instance)
            if instance.warnings:
                answer["warnings"] = list(instance.warnings)
            answers.append(answer)
        return answers


def visual_objects_json(instance: TaggingInstance) -> list[dict[str, Any]]:
    """The visual objects the model saw: label, box (pixels) and the words they belong to."""
    assert instance.visual is not None
    visual = instance.visual
    objects = []
    for index, (first, last) in enumerate(visual.spans.tolist()):
        box = visual.boxes[index] if index < len(visual.boxes) else None
        objects.append({
            "label": visual.labels[index] if index < len(visual.labels) else "",
            "box": [round(v, 1) for v in box] if box is not None else None,
            "start": first,
            "end": last + 1,
        })
    return objects


def _without_tags(instance: TaggingInstance) -> TaggingInstance:
    if instance.tags is None:
        return instance
    return TaggingInstance(
        words=instance.words, image_id=instance.image_id, image_path=instance.image_path,
        visual=instance.visual, metadata=instance.metadata, warnings=instance.warnings,
    )
