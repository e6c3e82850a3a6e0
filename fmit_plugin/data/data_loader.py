"""Batching: length-bucketed batch samplers and the collate step that turns instances into tensors."""
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
from tango.common import Registrable
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.vision.regions import GROUNDING_IOU_THRESHOLD, box_iou

Batch = dict[str, Any]
# Lengths in the same band of 10% (on a log scale) count as equal to the bucket sampler.
LENGTH_BAND = math.log(1.1)


class BatchSampler(Registrable):
    """Groups instance indices into batches. Registered implementations: "bucket", "basic"."""

    default_implementation = "bucket"

    def batches(
        self, instances: Sequence[TaggingInstance], epoch: int = 0, lengths: Optional[Sequence[int]] = None
    ) -> list[list[int]]:
        """Batches of indices into `instances`; `lengths` (one per instance, default: words) is what
        samplers that batch by length sort by."""
        raise NotImplementedError


@BatchSampler.register("basic")
class BasicBatchSampler(BatchSampler):
    """
    Consecutive batches in file order, optionally shuffled.

    Registered as a `BatchSampler` with name "basic".

    # Parameters

    batch_size : `int`, optional (default = `16`)
        Instances per batch (the last batch may be smaller).
    shuffle : `bool`, optional (default = `True`)
        Shuffle the instances each epoch (seeded by the epoch number).
    drop_last : `bool`, optional (default = `False`)
        Leave out a last batch smaller than `batch_size`.
    """

    def __init__(self, batch_size: int = 16, shuffle: bool = True, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last

    def batches(
        self, instances: Sequence[TaggingInstance], epoch: int = 0, lengths: Optional[Sequence[int]] = None
    ) -> list[list[int]]:
        indices = list(range(len(instances)))
        if self.shuffle:
            random.Random(epoch).shuffle(indices)
        return self._chunk(indices)

    def _chunk(self, indices: list[int]) -> list[list[int]]:
        batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches


@BatchSampler.register("bucket")
class BucketBatchSampler(BasicBatchSampler):
    """
    Sorts instances by length (with a little noise, so batches differ between epochs) and
    cuts the sorted list into batches, so a batch wastes little on padding; the batch order
    is then shuffled. As AllenNLP's "bucket" sampler, with one improvement: the length is what the
    model pays padding for when it is given (`train`, `evaluate` and `predict` give it
    `Model.sorting_lengths`: word pieces for a transformer text embedder), and
    lengths within 10% of each other are ordered by words, so that word-level tensors pad little too.
    Sorted by words only, as AllenNLP does, a quarter of Twitter-2015's padded training word pieces
    are padding; this way 9%.

    Registered as a `BatchSampler` with name "bucket".

    # Parameters

    batch_size : `int`, optional (default = `16`)
        Instances per batch (the last batch may be smaller).
    padding_noise : `float`, optional (default = `0.1`)
        Lengths are multiplied by a random factor in [1 - noise, 1 + noise] before sorting.
    shuffle : `bool`, optional (default = `True`)
        Shuffle the order of batches (and apply the noise). Off for evaluation.
    drop_last : `bool`, optional (default = `False`)
        Leave out a last batch smaller than `batch_size`.
    """

    def __init__(
        self,
        batch_size: int = 16,
        padding_noise: float = 0.1,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
        self.padding_noise = padding_noise

    def batches(
        self, instances: Sequence[TaggingInstance], epoch: int = 0, lengths: Optional[Sequence[int]] = None
    ) -> list[list[int]]:
        rng = random.Random(epoch)
        noise = self.padding_noise if self.shuffle else 0.0
        sizes = [len(instance) for instance in instances] if lengths is None else lengths
        if len(sizes) != len(instances):
            raise ValueError(f"{len(sizes)} lengths for {len(instances)} instances")

        def key(index: int) -> tuple[float, int]:
            length = sizes[index] * (1.0 + rng.uniform(-noise, noise))
            if lengths is None:
                return length, 0
            # Tags, CRF and lattice tensors are padded to the batch's most words, which sorting by
            # word pieces alone leaves scattered: lengths within 10% of each other (as the default
            # noise treats them anyway) count as equal, and equals are ordered by words. Twitter-2015
            # train, MiniLM's WordPiece, 10% noise: 91% of the padded word pieces and 95% of the word
            # slots are real, against 92% and 68% by word pieces alone, 76% and 92% by words alone.
            return math.floor(math.log1p(length) / LENGTH_BAND), len(instances[index])

        batches = self._chunk(sorted(range(len(instances)), key=key))
        if self.shuffle:
            rng.shuffle(batches)
        return batches


class DataLoader(Registrable):
    """
    Iterates over batches of instances, indexed with a `Vocabulary` (`index_with`) and collated.

    Registered implementation: "default" (also the default implementation).
    """

    default_implementation = "default"
    # Under DDP, training data must give every worker the same number of batches.
    even_shards: bool = False

    def index_with(self, vocab: Vocabulary) -> None:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        raise NotImplementedError

    def set_sorting_lengths(self, lengths: Sequence[int]) -> None:
        """One length per instance, as the model pays for it (`Model.sorting_lengths`), for batching
        by length; a loader that does not batch by length may ignore it."""

    def __iter__(self) -> Iterator[Batch]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


@DataLoader.register("default")
class TaggingDataLoader(DataLoader):
    """
    Batches `TaggingInstance`s. `batch_size` / `shuffle` build a "bucket" sampler unless a
    `batch_sampler` is given. In a distributed run each worker keeps every `world_size`-th batch,
    so workers see disjoint shards.

    Registered as a `DataLoader` with name "default".

    # Parameters

    instances : `Sequence[TaggingInstance]`
        The instances to batch, supplied by the train command (not part of the config).
    batch_size : `int`, optional (default = `16`)
        Instances per batch of the default "bucket" sampler; ignored when `batch_sampler` is given.
    shuffle : `bool`, optional (default = `True`)
        Shuffle the default sampler's batches each epoch; ignored when `batch_sampler` is given.
    batch_sampler : `BatchSampler`, optional (default = a "bucket" sampler)
        Decides which instances form each batch ("basic": file order, "bucket": similar lengths).
    label_namespace : `str`, optional (default = `"labels"`)
        The vocabulary namespace gold tags are indexed in.
    """

    def __init__(
        self,
        instances: Sequence[TaggingInstance],
        batch_size: int = 16,
        shuffle: bool = True,
        batch_sampler: Optional[BatchSampler] = None,
        label_namespace: str = "labels",
    ) -> None:
        self.instances = instances
        self.batch_sampler = batch_sampler or BucketBatchSampler(batch_size=batch_size, shuffle=shuffle)
        self.label_namespace = label_namespace
        self.vocab: Optional[Vocabulary] = None
        self._epoch = 0
        self._lengths: Optional[Sequence[int]] = None
        # Set by the trainer for training data: under DDP every worker must run the same number of
        # steps, so the batches that do not divide evenly among workers are left out of the epoch.
        self.even_shards = False

    def index_with(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def set_sorting_lengths(self, lengths: Sequence[int]) -> None:
        if len(lengths) != len(self.instances):
            raise ValueError(f"{len(lengths)} sorting lengths for {len(self.instances)} instances")
        self._lengths = list(lengths)

    def _batches(self) -> list[list[int]]:
        return self._shard(self.batch_sampler.batches(self.instances, self._epoch, self._lengths))

    def _shard(self, batches: list[list[int]]) -> list[list[int]]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            if self.even_shards:
                batches = batches[: len(batches) - len(batches) % world]
            return batches[rank::world]
        return batches

    def __iter__(self) -> Iterator[Batch]:
        for indices in self._batches():
            yield collate([self.instances[i] for i in indices], self.vocab, self.label_namespace)

    def __len__(self) -> int:
        return len(self._batches())


def collate(
    instances: Sequence[TaggingInstance],
    vocab: Optional[Vocabulary] = None,
    label_namespace: str = "labels",
) -> Batch:
    """
    Instances -> model inputs: `words` (lists of strings; each text embedder tokenizes them
    itself, so swapping the text model in a config needs no reader change), `tags` (padded ids)
    when every instance has gold tags, visual objects padded when any instance has them, gold
    grounding targets when any instance has gold entity boxes (`grounding_targets`), and `metadata`
    (with each tweet's `object_boxes` and gold `entity_boxes`, for grounded outputs and `gmner_f1`).
    """
    batch: Batch = {
        "words": [list(instance.words) for instance in instances],
        "metadata": [
            {**instance.metadata, "words": instance.words, "image_path": instance.image_path,
             "image_id": instance.image_id}
            for instance in instances
        ],
    }
    max_words = max((len(instance) for instance in instances), default=0)
    if instances and all(instance.tags is not None for instance in instances):
        if vocab is None:
            raise RuntimeError("DataLoader.index_with(vocab) must be called before iterating")
        tags = torch.zeros(len(instances), max_words, dtype=torch.long)
        known = vocab.get_token_to_index_vocabulary(label_namespace)
        for i, instance in enumerate(instances):
            assert instance.tags is not None
            if any(tag not in known for tag in instance.tags):
                vocab.check_labels([instance], label_namespace)  # raises, naming file, line and label
            ids = [known[tag] for tag in instance.tags]
            tags[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        batch["tags"] = tags
    if any(instance.visual is not None for instance in instances):
        batch.update(collate_visual_objects(instances))
    for instance, metadata in zip(instances, batch["metadata"]):
        if instance.visual is not None:
            metadata["object_boxes"] = list(instance.visual.boxes)
        if instance.entity_boxes is not None:
            metadata["entity_boxes"] = instance.entity_boxes
    if any(instance.entity_boxes is not None for instance in instances):
        batch.update(grounding_targets(instances))
    return batch


def grounding_targets(instances: Sequence[TaggingInstance], iou_threshold: float = GROUNDING_IOU_THRESHOLD) -> Batch:
    """
    Gold grounding of every gold entity, padded: `entity_spans` `(batch, entities, 2)` (start, end
    exclusive), `entity_span_mask` `(batch, entities)`, and `grounding_targets` `(batch, entities,
    objects + 1)`, True for each visual object whose box has IoU >= `iou_threshold` with one of the
    entity's gold boxes, and in the last column for an entity with no gold box ("none"). A groundable
    entity no candidate overlaps enough has no True option: the grounding loss leaves it out.
    """
    entities = [sorted(instance.entity_boxes or {}) for instance in instances]
    max_entities = max((len(spans) for spans in entities), default=0)
    max_objects = max((instance.visual.features.shape[0] for instance in instances if instance.visual), default=0)
    spans = torch.zeros(len(instances), max_entities, 2, dtype=torch.long)
    span_mask = torch.zeros(len(instances), max_entities, dtype=torch.bool)
    targets = torch.zeros(len(instances), max_entities, max_objects + 1, dtype=torch.bool)
    for row, (instance, sentence) in enumerate(zip(instances, entities)):
        candidates = instance.visual.boxes if instance.visual is not None else []
        for column, span in enumerate(sentence):
            assert instance.entity_boxes is not None
            gold = instance.entity_boxes[span]
            spans[row, column] = torch.tensor(span)
            span_mask[row, column] = True
            if not gold:
                targets[row, column, max_objects] = True
            for index, box in enumerate(candidates):
                if box is not None and any(box_iou(box, gold_box) >= iou_threshold for gold_box in gold):
                    targets[row, column, index] = True
    return {"entity_spans": spans, "entity_span_mask": span_mask, "grounding_targets": targets}


def collate_visual_objects(instances: Sequence[TaggingInstance]) -> Batch:
    """Pads visual objects to `(batch, max_objects, dim)` with a mask; tweets without objects get none."""
    dims = {instance.visual.features.shape[1] for instance in instances if instance.visual is not None}
    if len(dims) != 1:
        raise ValueError(f"Visual features of different sizes in one batch: {sorted(dims)}")
    dim = dims.pop()
    max_objects = max(
        (instance.visual.features.shape[0] for instance in instances if instance.visual is not None),
        default=0,
    )
    features = torch.zeros(len(instances), max_objects, dim)
    spans = torch.zeros(len(instances), max_objects, 2, dtype=torch.long)
    mask = torch.zeros(len(instances), max_objects, dtype=torch.bool)
    for i, instance in enumerate(instances):
        if instance.visual is None:
            continue
        count = instance.visual.features.shape[0]
        features[i, :count] = instance.visual.features
        spans[i, :count] = instance.visual.spans
        mask[i, :count] = True
    return {"object_features": features, "object_spans": spans, "object_mask": mask}
