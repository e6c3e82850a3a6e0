"""The `Predictor` registry and the tagger predictor: JSON (or Python values) in, tagged tweets out."""
import base64
import binascii
import dataclasses
import io
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from PIL import Image
from tango.common import Registrable

from fmit_plugin.common.device import move_to_device
from fmit_plugin.data.data_loader import collate
from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.tweet_tokenizer import tokenize_tweet
from fmit_plugin.models.archival import load_archive
from fmit_plugin.models.model import Model
from fmit_plugin.vision.grounders import parse_region
from fmit_plugin.vision.regions import Region

# JSON's "\\ud800" escape decodes to a lone surrogate: a str no tokenizer (and no UTF-8 file) accepts.
# A surrogate code point left in a Python str is always lone (json.loads joins valid pairs).
_SURROGATE = re.compile("[\ud800-\udfff]")


def model_safe_word(word: str) -> str:
    """`word` with lone surrogates replaced by U+FFFD, the replacement character, for the model."""
    return _SURROGATE.sub("\ufffd", word)


class Predictor(Registrable):
    """
    Wraps a trained `Model` and its `DatasetReader` to go from JSON to JSON, as AllenNLP's does:

        from fmit_plugin import Predictor
        predictor = Predictor.from_path("runs/fmit/model.tar.gz")
        predictor.predict_json({"sentence": "Obama in Paris", "image": "photos/t1.jpg"})
        predictor.predict_batch_json([{"tokens": ["Obama", "in", "Paris"]}, {"sentence": "hi"}])

    The answers are the dicts `allennlp predict` writes as lines.
    """

    def __init__(self, model: Model, dataset_reader: DatasetReader) -> None:
        self.model = model
        self.dataset_reader = dataset_reader
        # As AllenNLP's predictor: no dropout at prediction time, whatever mode the model was left in.
        self.model.eval()
        # Inputs with a read image for which no region was found (see `VisualObjects.ungrounded`),
        # over this predictor's life: `allennlp predict` logs the count of its run.
        self.ungrounded_inputs = 0

    @classmethod
    def from_path(
        cls,
        archive_path: Union[str, "os.PathLike[str]"],
        predictor_name: Optional[str] = None,
        cuda_device: int = -1,
        overrides: Union[str, dict, None] = None,
        feature_store: Optional[str] = None,
    ) -> "Predictor":
        """
        The predictor of a trained archive (`model.tar.gz` or a serialization directory), as
        AllenNLP's `Predictor.from_path`: the model with its trained weights on `cuda_device` (-1: CPU)
        and the archive's validation dataset reader (so its visual objects: backbone, grounder and
        sidecar, feature store), under the registered predictor `predictor_name` (default: the
        model's own, "sentence_tagger"). The archive's feature store is only read; new visual features
        stay in memory, or go to `feature_store` (a store file to read and write) when given.

            predictor = Predictor.from_path("runs/fmit/model.tar.gz", cuda_device=0)
        """
        archive = load_archive(
            archive_path, cuda_device=cuda_device, overrides=overrides or "", feature_store=feature_store
        )
        name = predictor_name or archive.model.default_predictor or "sentence_tagger"
        return Predictor.by_name(name)(archive.model, archive.validation_dataset_reader)

    def predict_json(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """One input dict (a line of `allennlp predict`'s input) to its answer."""
        return self.predict_batch_json([inputs])[0]

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
    reader's `image_dir`), `"image_base64"` (the image itself, base64-encoded; then `"image"`, if
    given, only names it: its id for a sidecar), and `"regions"`: this image's groundings in the
    `precomputed` sidecar's format, `[{"phrase": "Obama", "span": [0, 0], "box": [x0, y0, x1, y1],
    "score": 0.9}]` (span: inclusive first and last word, or null for the whole sentence; score
    optional), used instead of whatever grounder the model was trained with. Output: `tokens`, `tags`,
    and `entities`, each with `text`, `type`, `start`, `end` (word indices, end exclusive) and
    `confidence`; a model with an `entity_grounding` block adds each entity's `box` (`[x0, y0, x1, y1]`
    in image pixels, or null: not in the image) and `box_confidence`. An `"id"` key is echoed. What
    went wrong without stopping the line (an image that could not be used, an image for which no
    region was found...) is listed in `"warnings"`, present only when there is something to say.

        predictor = Predictor.from_path("runs/fmit/model.tar.gz")
        predictor.predict(sentence="Obama in Paris", image=open("t1.jpg", "rb").read(),
                          regions=[{"phrase": "Obama", "span": [0, 0], "box": [10, 10, 90, 120]}])

    Registered as a `Predictor` with name "sentence_tagger".
    """

    def predict(
        self,
        sentence: Optional[str] = None,
        tokens: Optional[list[str]] = None,
        image: Union[str, "os.PathLike[str]", bytes, Image.Image, None] = None,
        regions: Optional[list[dict[str, Any]]] = None,
        image_id: Optional[str] = None,
    ) -> dict[str, Any]:
        """
        Tags one tweet, given as `tokens` or as a `sentence` (split with the tweet tokenizer), with
        an optional `image`: a path (str or `PathLike`), the encoded bytes of an image file, or a
        `PIL.Image` (both kept in memory, never written to disk), and optional `regions` in the
        sidecar format (see the class docstring). `image_id` names an in-memory image (the key the
        archive's sidecar is looked up with). Returns the dict `allennlp predict` writes as a line.

            >>> answer = predictor.predict(sentence="Obama visits Paris", image=PIL.Image.open("t1.jpg"))
            >>> [(e["text"], e["type"]) for e in answer["entities"]]
            [('Obama', 'PER'), ('Paris', 'LOC')]
        """
        json_dict: dict[str, Any] = {}
        if tokens is not None:
            json_dict["tokens"] = tokens
        elif sentence is not None:
            json_dict["sentence"] = sentence
        if regions is not None:
            json_dict["regions"] = regions
        image_bytes: Optional[bytes] = None
        if isinstance(image, Image.Image):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            image_bytes = buffer.getvalue()
        elif isinstance(image, (bytes, bytearray, memoryview)):
            image_bytes = bytes(image)
        elif image is not None:
            if not isinstance(image, (str, os.PathLike)):
                raise ValueError(f"image must be a path, bytes or a PIL.Image, got {type(image).__name__}")
            json_dict["image"] = os.fspath(image)
        if image_id is not None:
            json_dict["image"] = image_id
        tweet = self.parse_json(json_dict)
        if image_bytes is not None:
            tweet.image_bytes = image_bytes
        return self.predict_instances([self.tweet_to_instance(tweet)])[0]

    def parse_json(self, json_dict: dict[str, Any]) -> "TweetInput":
        """Checks one input dict and returns what it asks for; `ValueError` naming the key that is wrong.
        Cheap (no image is read): a server checks requests with it before queueing them."""
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
        # Before the image is read or a tensor made: a tweet too long for the model fails at once.
        self.model.check_lengths([len(tokens)])
        tweet = TweetInput(tokens=list(tokens), image=image)
        encoded = json_dict.get("image_base64")
        if encoded is not None:
            if not isinstance(encoded, str):
                raise ValueError('"image_base64" must be a string (the image file, base64-encoded)')
            try:
                tweet.image_bytes = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as error:
                raise ValueError(f'"image_base64" is not valid base64: {error}') from error
        if "regions" in json_dict:
            tweet.regions = parse_regions(json_dict["regions"], len(tweet.tokens))
        if "id" in json_dict:
            tweet.id = json_dict["id"]
            tweet.has_id = True
        return tweet

    def tweet_to_instance(self, tweet: "TweetInput") -> TaggingInstance:
        """The instance of a checked input: its image read (from the path or the bytes) and its visual
        objects extracted by the reader, with the given regions if any."""
        # The model sees lone surrogates as U+FFFD; the answer echoes the tokens as given.
        words = [model_safe_word(token) for token in tweet.tokens]
        instance = self.dataset_reader.text_to_instance(
            words, image=tweet.image, image_bytes=tweet.image_bytes, regions=tweet.regions
        )
        if words != tweet.tokens:
            instance.metadata["tokens"] = list(tweet.tokens)
        if tweet.has_id:
            instance.metadata["id"] = tweet.id
        return instance

    def json_to_instance(self, json_dict: dict[str, Any]) -> TaggingInstance:
        return self.tweet_to_instance(self.parse_json(json_dict))

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
            if instance.visual is not None and instance.visual.ungrounded:
                self.ungrounded_inputs += 1
            answers.append(answer)
        return answers


@dataclass
class TweetInput:
    """
    One checked prediction input (see `SentenceTaggerPredictor.parse_json`).

    # Parameters

    tokens : `list[str]`
        The tweet's words, as given (or split from `"sentence"` by the tweet tokenizer).
    image : `str`, optional
        A path or an image id; with `image_bytes`, only the image's name (its id).
    image_bytes : `bytes`, optional
        The image itself, in memory.
    regions : `list[Region]`, optional
        Given groundings (`None`: not given; the reader's grounder finds them).
    id : `Any`
        Echoed in the answer when `has_id`.
    """

    tokens: list[str]
    image: Optional[str] = None
    image_bytes: Optional[bytes] = None
    regions: Optional[list[Region]] = None
    id: Any = None
    has_id: bool = False


def parse_regions(regions: Any, num_words: int) -> list[Region]:
    """Given regions, checked as sidecar lines are, and spans checked against the tweet's `num_words`;
    `ValueError` naming the region: `"regions"[2]: 'box' must be 4 numbers...`."""
    if not isinstance(regions, list):
        raise ValueError(f'"regions" must be a list of regions, got {type(regions).__name__}')
    parsed = []
    for index, region in enumerate(regions):
        try:
            phrase, box, span, score = parse_region(region)
        except ValueError as error:
            raise ValueError(f'"regions"[{index}]: {error}') from error
        if span is not None and span[1] >= num_words:
            raise ValueError(f'"regions"[{index}]: \'span\' {list(span)} is outside the {num_words}-word tweet')
        parsed.append(Region(phrase, box, span, score))
    return parsed


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
    return dataclasses.replace(instance, tags=None)
