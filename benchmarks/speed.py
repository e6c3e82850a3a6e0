"""
Speed and memory benchmark: what FMIT's interaction costs over the text encoder, and how it compares
with a UMT-style cross-modal interaction (the paper's Table 3), all on the same batches.

    python benchmarks/speed.py --device cpu --repeats 5 --output benchmarks/results/speed.json --publish

Five groups (`--groups`), each row timed `--repeats` times after a warm-up, rows interleaved
round-robin within a group so that load from other processes hits every row alike:

1. `inference`: end-to-end prediction (collate, forward, CRF decoding, entity confidences) through
   the `sentence_tagger` predictor under `torch.inference_mode`, for BERT-CRF and FMIT l = 1 / 3 / 6
   built from the shipped configs, with a bert-base-sized encoder (random weights, 12 x 768) and
   with the offline MiniLM;
2. `training`: optimizer steps (forward with gold tags, the EBD branch included, backward, clip,
   Adam) on the `--train-batches` batches of median length, the same rows;
3. `interaction`: the interaction module alone on the same lattices (d = 512): FMIT l = 1 / 3 against
   the UMT-style module (`umt_interaction`, 768 wide, 12 heads); plus, as context only, the UMT-style
   module on the input sizes UMT's own code uses (every text padded to 128 word pieces, 49 regions);
4. `fusion`: relative position fusion, the gather formulation (`forward`) against the literal
   (L, L, 4d) x (4d, d) one (`naive_forward`), at lattice lengths 32 / 64 / 128, plus one FMIT l = 3
   forward at batch 16 x 128 words + 8 objects;
5. `bucketing`: what padding costs, FMIT l = 3 with the MiniLM predicting the first
   `--bucketing-tweets` tweets of `--data` in the training data loader's batches sorted by words (as
   AllenNLP's sampler) or by the model's lengths (word pieces; near-equal ones by words).
6. `long`: long inputs, FMIT l = 3 (d = 512) forward and training step (forward, backward, Adam) at
   batch 16 x (L words + 8 objects) for `--long-lengths` L, against the same-size plain
   `pytorch_transformer` (the w/o Rel encoder) and the dense-R formulation it replaced
   (`FlatLatticeTransformer.dense_forward`, up to `--long-dense-words`; the size of its R is recorded
   for every L); with `--long-column-lookups`, also FMIT forward with the objects' columns looked up
   (`column_windows = False`, the code before the windows). Its own table (`speed_long` in
   docs/speed.md), so run it with its own `--output`:

       python benchmarks/speed.py --groups long --threads 1 --long-repeats 2 --long-dense-words 256 \
           --output benchmarks/results/speed_long.json --publish

Batches: `--batches` batches of 16 tweets as the training data loader makes them (the "bucket"
sampler, by word pieces, over all of `--data`, Twitter-2015 train, or over tweets of a fixed length
distribution when it is absent), those at evenly spaced length quantiles, deterministic from
`--seed`; each tweet gets 1-8 visual objects (random 2048-d features standing for precomputed
ResNet-152 features, random word spans). Times are per call (all the batches of the row); tweets/s = tweets / median.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` over one call minus what was allocated
before it. On CPU, the process's resident-set high-water mark over one call minus the resident set
before it (Linux: VmHWM is reset through /proc/self/clear_refs): memory the call actually touched,
allocator caching included, so a little coarser than the CUDA figure. The `long` group shows the
median of `--long-memory-calls` calls (every call's figure is kept), each row measured in a fresh
process after one warm-up call (`--long-memory-processes fresh`, the default: in the benchmark's own
process a call's rise also depends on what the rows before it left in glibc's heap), and also records, on CPU, the most
tensor bytes alive at once during one call (`tensor_peak_memory`: the CUDA figure's definition), which
is exact: the resident set's rise of a call of a few tens of MiB moves by a quarter between calls,
with the allocator's reuse of what earlier calls freed.

`--profile` adds the top operators (torch.profiler, self CPU time) of one call of chosen rows, and
every inference row gets a breakdown of one call over the model's parts (forward hooks).
`--render FILE [--publish]` measures nothing and renders the tables of an existing results file.
Not a test: it takes about 10 minutes on 2 CPU cores.
"""
import argparse
import collections
import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from tango.common import Params
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from fmit_plugin.common.device import autocast, move_to_device
from fmit_plugin.common.model_paths import OFFLINE_TEXT_MODEL, resolve_model_path
from fmit_plugin.common.params import load_config
from fmit_plugin.common.plugins import import_plugins
from fmit_plugin.data.data_loader import BucketBatchSampler, collate, collate_visual_objects
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.model import Model
from fmit_plugin.modules.flat_lattice import build_flat_lattice
from fmit_plugin.modules.flat_lattice_transformer import FlatLatticeTransformer
from fmit_plugin.modules.relative_position_fusion import RelativePositionFusion
from fmit_plugin.modules.token_embedders import PretrainedTransformerMismatchedEmbedder
from fmit_plugin.modules.umt_interaction import UmtInteraction
from fmit_plugin.predictors.predictor import SentenceTaggerPredictor
from fmit_plugin.vision.visual_objects import VisualObjects

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import machine  # noqa: E402
from readme_tables import markdown_table, publish  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training_configs"
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
BATCH_SIZE = 16
MAX_OBJECTS = 8
VISUAL_DIM = 2048
# Rows of groups 1 and 2: name -> shipped config.
TAGGERS = {"BERT-CRF": "bert_crf.jsonnet", "FMIT l=1": "fmit_l1.jsonnet", "FMIT l=3": "fmit.jsonnet",
           "FMIT l=6": "fmit_l6.jsonnet"}
GROUPS = ("inference", "training", "interaction", "fusion", "bucketing", "long")
UMT_PUBLISHED_INPUTS = "UMT-style at UMT's input sizes (128 pieces + 49 regions; context)"

Row = dict[str, Any]


# ---------------------------------------------------------------------------------------- data
def read_tweets(data: Optional[Path], rng: random.Random) -> list[list[str]]:
    """The tweets of a Twitter MNER file when there is one, else 2048 tweets of a fixed vocabulary with
    lengths from a fixed distribution close to Twitter-2015's (mean ~16 words, 3..40)."""
    if data is not None and data.is_file():
        tweets, words = [], []
        for line in data.read_text(encoding="utf-8").splitlines():
            if line.startswith("IMGID:"):
                continue
            if not line.strip():
                if words:
                    tweets.append(words)
                words = []
            else:
                words.append(line.split("\t")[0])
        if words:
            tweets.append(words)
        return tweets
    vocabulary = ("RT @user the a of in on at with and to for from is was new big city team game news "
                  "day night love vote live show music match park #nba #love London Paris Obama").split()
    lengths = [min(40, max(3, round(rng.gauss(16, 7)))) for _ in range(2048)]
    return [[rng.choice(vocabulary) for _ in range(length)] for length in lengths]


@functools.cache
def word_piece_counter() -> PretrainedTransformerMismatchedEmbedder:
    """The offline MiniLM's embedder (random weights), built once: its uncased WordPiece is also the
    bert-base rows' tokenizer, so its `sequence_lengths` are what both encoders' padding is paid in."""
    return PretrainedTransformerMismatchedEmbedder(OFFLINE_TEXT_MODEL, load_weights=False)


def make_batches(data: Optional[Path], num_batches: int, seed: int) -> list[list[TaggingInstance]]:
    """
    `num_batches` batches of 16 tweets as training batches them: all tweets cut into batches by the
    "bucket" sampler (sorted by word pieces, as `train` sorts them, with 10% noise), of which the
    batches at evenly spaced quantiles of length are kept, so that lengths and padding are
    representative. Each tweet is then `decorate`d.
    """
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    pool = [TaggingInstance(words) for words in read_tweets(data, rng)]
    pieces = word_piece_counter().sequence_lengths([instance.words for instance in pool])
    sampled = [batch for batch in BucketBatchSampler(BATCH_SIZE).batches(pool, epoch=seed, lengths=pieces)
               if len(batch) == BATCH_SIZE]
    sampled.sort(key=lambda batch: sum(pieces[i] for i in batch))
    chosen = [sampled[int((k + 0.5) * len(sampled) / num_batches)] for k in range(num_batches)]
    return [[decorate(pool[i].words, rng, generator) for i in batch] for batch in chosen]


def decorate(words: list[str], rng: random.Random, generator: torch.Generator) -> TaggingInstance:
    """A tweet with 1-8 visual objects (random 2048-d features, random spans of 1-3 words) and random
    BIO tags."""
    objects = rng.randint(1, MAX_OBJECTS)
    spans = []
    for _ in range(objects):
        first = rng.randrange(len(words))
        spans.append([first, min(len(words) - 1, first + rng.randrange(3))])
    features = torch.randn(objects, VISUAL_DIM, generator=generator).relu()
    tags = [rng.choice(LABELS[:1] * 8 + LABELS[1::2]) for _ in words]  # B- after anything is valid BIO
    return TaggingInstance(list(words), tags, visual=VisualObjects(features, torch.tensor(spans)))


def padding_use(batches: list[list[TaggingInstance]]) -> dict[str, float]:
    """Share of the padded slots that hold something real: word slots, word pieces (MiniLM's uncased
    WordPiece, [CLS] and [SEP] included) and lattice cells ([CLS], words, [SEP], objects)."""
    def cells(instance: TaggingInstance) -> int:
        return len(instance) + 2 + (len(instance.visual.spans) if instance.visual is not None else 1)

    # Each maps a batch to the sizes of its tweets (word pieces: one tokenizer call per batch).
    sizers: dict[str, Callable[[list[TaggingInstance]], list[int]]] = {
        "word_slots": lambda batch: [len(instance) for instance in batch],
        "word_pieces": lambda batch: word_piece_counter().sequence_lengths([instance.words for instance in batch]),
        "lattice_cells": lambda batch: [cells(instance) for instance in batch],
    }
    use = {}
    for name, size in sizers.items():
        sizes = [size(batch) for batch in batches]
        use[name] = sum(map(sum, sizes)) / sum(max(row) * len(row) for row in sizes)
    return use


def write_bert_base(directory: Path) -> Path:
    """A bert-base-sized BERT (12 layers, 768 wide, 12 heads, 3072) with random weights, using the
    offline MiniLM's uncased WordPiece tokenizer (30522 pieces, bert-base-uncased's vocabulary)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(OFFLINE_TEXT_MODEL))
    tokenizer.save_pretrained(directory)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


# ---------------------------------------------------------------------------------------- measuring
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_libc() -> Optional[ctypes.CDLL]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_memory(call: Callable[[], Any], device: torch.device) -> Optional[int]:
    """Bytes one `call` needs beyond what is already held (see the module docstring)."""
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    # Give freed heap pages back to the OS first, so that what the call touches shows in the
    # resident set again rather than hiding in pages glibc kept from earlier calls.
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        before = _rss_bytes()
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current resident set
    except OSError:
        return None
    call()
    return max(0, _hwm_bytes() - before)


class _LiveTensorBytes(TorchDispatchMode):
    """
    The most bytes of tensor storage alive at once while it is active: every storage an operator
    returns counts from then until the last tensor on it goes. On CPU torch keeps no allocation
    statistics (CUDA's `max_memory_allocated` is this figure there), hence by hand; temporaries inside
    one operator are not seen, and inputs made before are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tensors_on: collections.Counter = collections.Counter()
        self.nbytes: dict[int, int] = {}
        self.live = self.peak = 0

    def _release(self, key: int) -> None:
        self.tensors_on[key] -= 1
        if not self.tensors_on[key]:
            del self.tensors_on[key]
            self.live -= self.nbytes.pop(key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key not in self.nbytes:
                    self.nbytes[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                self.tensors_on[key] += 1
                weakref.finalize(tensor, self._release, key)
        return out


def tensor_peak_memory(call: Callable[[], Any], device: torch.device) -> Optional[int]:
    """The most tensor bytes alive at once during one `call` (CPU only; on CUDA `peak_memory` is this)."""
    if device.type != "cpu":
        return None
    gc.collect()
    with _LiveTensorBytes() as live:
        call()
        gc.collect()
    return live.peak


def run_interleaved(rows: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device,
                    sets: Optional[dict[str, Callable[[], Any]]] = None) -> dict[str, list[float]]:
    """Seconds per call of every row, `repeats` rounds of one call each in turn (after `warmup`)."""
    for call in rows.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, call in rows.items():
            if sets is not None and name in sets:
                sets[name]()
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def summary(seconds: list[float], per_call_items: int) -> Row:
    ordered = sorted(seconds)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    median = statistics.median(ordered)
    return {
        "median_s": median, "q1_s": quartiles[0], "q3_s": quartiles[2], "min_s": ordered[0],
        "max_s": ordered[-1], "repeats": len(ordered), "items_per_s": per_call_items / median,
        "times_s": seconds,
    }


def paired_ratio(numerator: list[float], denominator: list[float]) -> Row:
    """Median and range of the per-round ratios (rows of a round ran back to back, under the same load)."""
    ratios = sorted(a / b for a, b in zip(numerator, denominator))
    return {"median": statistics.median(ratios), "min": ratios[0], "max": ratios[-1]}


def top_operators(call: Callable[[], Any], device: torch.device, limit: int = 12) -> list[Row]:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        call()
        synchronize(device)
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events) or 1
    return [
        {"op": event.key, "calls": event.count, "self_cpu_ms": event.self_cpu_time_total / 1000,
         "share": event.self_cpu_time_total / total}
        for event in events[:limit]
    ]


COMPONENTS = ("text_field_embedder", "projection", "encoder", "tagging_head", "boundary_encoder", "boundary_head")


def component_seconds(model: Model, call: Callable[[], Any], device: torch.device) -> dict[str, float]:
    """Wall time of one `call` spent in each top-level part of the model (forward hooks), the rest
    being decoding, entity confidences, lattice building, collation and glue."""
    spent: dict[str, float] = {}
    started: dict[str, float] = {}
    handles = []
    for name in COMPONENTS:
        module = getattr(model, name, None)
        if not isinstance(module, torch.nn.Module):
            continue

        def before(*_: Any, name: str = name) -> None:
            synchronize(device)
            started[name] = time.perf_counter()

        def after(*_: Any, name: str = name) -> None:
            synchronize(device)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started[name]

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    synchronize(device)
    start = time.perf_counter()
    call()
    synchronize(device)
    total = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    spent["rest"] = total - sum(spent.values())
    spent["total"] = total
    return spent


# ---------------------------------------------------------------------------------------- groups 1-2
def build_tagger(config: str, text_model: str, vocab: Vocabulary, device: torch.device) -> Model:
    os.environ["TEXT_MODEL"] = text_model
    params = load_config(CONFIGS / config)
    model = Model.from_params(Params(params.as_dict()["model"]), vocab=vocab)
    return model.to(device)


def bf16_autocast(device: torch.device, bf16: bool) -> Any:
    """`--bf16` applies on GPUs only."""
    return autocast(device, torch.bfloat16 if bf16 and device.type == "cuda" else None)


def tagger_groups(args: argparse.Namespace, batches: list[list[TaggingInstance]], device: torch.device,
                  results: dict[str, Any]) -> None:
    vocab = Vocabulary({"labels": LABELS})
    encoders = {}
    with tempfile.TemporaryDirectory(prefix="speed_bert_base_") as folder:
        if "bert-base" in args.encoders:
            encoders["bert-base (random, 12 x 768)"] = str(write_bert_base(Path(folder)))
        if "minilm" in args.encoders:
            encoders["MiniLM (offline, 6 x 384)"] = OFFLINE_TEXT_MODEL
        tweets = sum(len(batch) for batch in batches)
        for encoder_name, text_model in encoders.items():
            torch.manual_seed(0)
            models = {name: build_tagger(config, text_model, vocab, device) for name, config in TAGGERS.items()}
            if "inference" in args.groups:
                rows = {}
                for name, model in models.items():
                    model.eval()
                    predictor = SentenceTaggerPredictor(model, TwitterMnerReader())

                    def predict(predictor: SentenceTaggerPredictor = predictor) -> None:
                        with bf16_autocast(device, args.bf16):
                            for batch in batches:
                                predictor.predict_instances(batch)

                    rows[name] = predict
                record_group(results, "inference", encoder_name, rows, tweets, args, device)
                for name, model in models.items():
                    results["groups"]["inference"][encoder_name]["rows"][name]["components_s"] = component_seconds(
                        model, rows[name], device)
            if "training" in args.groups:
                # The batches of median length, --train-batches of them (a bert-base-sized step is slow on CPU).
                middle = max(0, (len(batches) - args.train_batches) // 2)
                train_batches = batches[middle : middle + args.train_batches]
                collated = [collate(batch, vocab) for batch in train_batches]
                rows = {}
                for name, model in models.items():
                    model.train()
                    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)

                    def step(model: Model = model, optimizer: torch.optim.Optimizer = optimizer,
                             collated: list[dict[str, Any]] = collated) -> None:
                        # As the trainer's inner loop: forward with tags, backward, clip, step.
                        for batch in collated:
                            with bf16_autocast(device, args.bf16):
                                loss = model(**move_to_device(batch, device))["loss"]
                            loss.backward()
                            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], 5.0)
                            optimizer.step()
                            optimizer.zero_grad(set_to_none=True)

                    rows[name] = step
                record_group(results, "training", encoder_name, rows, sum(len(b) for b in train_batches), args, device)
                for name, model in models.items():
                    results["groups"]["training"][encoder_name]["rows"][name]["components_s"] = component_seconds(
                        model, rows[name], device)
            del models


def record_group(results: dict[str, Any], group: str, setting: str, rows: dict[str, Callable[[], Any]],
                 items: int, args: argparse.Namespace, device: torch.device, baseline: Optional[str] = None,
                 extra: Optional[dict[str, Row]] = None,
                 memory: Optional[Callable[[str], list[Optional[int]]]] = None) -> None:
    """Times `rows` interleaved and records each one's figures; `memory(name)`, where given, measures a long
    row's resident-set rises (else this process does)."""
    repeats = {"fusion": args.fusion_repeats, "long": args.long_repeats}.get(group, args.repeats)
    logging.info("%s / %s: %s (%d rounds)", group, setting, ", ".join(rows), repeats)
    times = run_interleaved(rows, repeats, args.warmup, device)
    baseline = baseline or next(iter(rows))
    entry: dict[str, Any] = {"baseline": baseline, "rows": {}}
    for name, call in rows.items():
        row = summary(times[name], items)
        row["ratio_to_baseline"] = paired_ratio(times[name], times[baseline])
        if group == "long":
            # The resident set's rise moves by a quarter between calls of the same code (glibc's
            # reuse of what earlier calls freed): the median of several calls, each one kept.
            calls = memory(name) if memory else [peak_memory(call, device) for _ in range(args.long_memory_calls)]
            row["peak_memory_calls_bytes"] = calls
            row["peak_memory_bytes"] = None if None in calls else int(statistics.median(calls))
            row["tensor_peak_bytes"] = tensor_peak_memory(call, device)
        else:
            row["peak_memory_bytes"] = peak_memory(call, device)
        if extra and name in extra:
            row.update(extra[name])
        if args.profile and any(re.search(pattern, f"{group}/{setting}/{name}") for pattern in args.profile):
            row["top_operators"] = top_operators(call, device)
        entry["rows"][name] = row
        logging.info("  %-28s median %.4f s (IQR %.4f-%.4f), x%.2f of %s, peak %s MiB", name, row["median_s"],
                     row["q1_s"], row["q3_s"], row["ratio_to_baseline"]["median"], baseline,
                     _mib(row["peak_memory_bytes"]))
    results["groups"].setdefault(group, {})[setting] = entry


# ---------------------------------------------------------------------------------------- groups 3-4
def lattices(batches: list[list[TaggingInstance]], dim: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Flat lattices of the batches' shapes (random projected words and objects)."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for batch in batches:
        collated = collate_visual_objects(batch)
        word_count = max(len(instance) for instance in batch)
        word_mask = torch.tensor([[i < len(instance) for i in range(word_count)] for instance in batch])
        words = torch.randn(len(batch), word_count, dim, generator=generator)
        objects = torch.randn(*collated["object_mask"].shape, dim, generator=generator)
        lattice = build_flat_lattice(words, word_mask, objects, collated["object_mask"], collated["object_spans"],
                                     torch.randn(dim, generator=generator), torch.randn(dim, generator=generator))
        out.append(move_to_device({"inputs": lattice.embeddings, "mask": lattice.mask, "head": lattice.head,
                                   "tail": lattice.tail, "visual_mask": lattice.object_cell_mask()}, device))
    return out


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def interaction_group(args: argparse.Namespace, batches: list[list[TaggingInstance]], device: torch.device,
                      results: dict[str, Any]) -> None:
    torch.manual_seed(0)
    inputs = lattices(batches, 512, device)
    modules: dict[str, torch.nn.Module] = {
        "FMIT l=1": FlatLatticeTransformer(num_layers=1),
        "FMIT l=3": FlatLatticeTransformer(num_layers=3),
        "UMT-style (768, 12 heads)": UmtInteraction(input_dim=512),
    }
    rows = {}
    for name, module in modules.items():
        module.to(device).eval()
        takes_positions = isinstance(module, FlatLatticeTransformer)

        def encode(module: torch.nn.Module = module, takes_positions: bool = takes_positions) -> None:
            with torch.inference_mode(), bf16_autocast(device, args.bf16):
                for lattice in inputs:
                    if takes_positions:
                        module(lattice["inputs"], lattice["mask"], head=lattice["head"], tail=lattice["tail"])
                    else:
                        module(lattice["inputs"], lattice["mask"], visual_mask=lattice["visual_mask"])

        rows[name] = encode
    # Context, not the comparison: the input sizes UMT's own code feeds its interaction, every text
    # padded to 128 word pieces and 49 regions (a 7 x 7 ResNet grid) per image, for as many tweets.
    published = UMT_PUBLISHED_INPUTS
    umt = modules["UMT-style (768, 12 heads)"]
    padded_cells = 128 + 49
    padded = [
        {"inputs": torch.randn(lattice["inputs"].size(0), padded_cells, 512, device=device),
         "visual_mask": torch.arange(padded_cells, device=device).expand(lattice["inputs"].size(0), -1) >= 128}
        for lattice in inputs
    ]

    def encode_padded() -> None:
        with torch.inference_mode(), bf16_autocast(device, args.bf16):
            for lattice in padded:
                umt(lattice["inputs"], None, visual_mask=lattice["visual_mask"])

    rows[published] = encode_padded
    modules[published] = umt
    extra = {name: {"parameters": parameter_count(module)} for name, module in modules.items()}
    tweets = sum(len(batch) for batch in batches)
    record_group(results, "interaction", "d = 512, same lattices", rows, tweets, args, device,
                 baseline="FMIT l=1", extra=extra)


# ---------------------------------------------------------------------------------------- group 5
BY_WORDS = "by words (as AllenNLP)"
BY_MODEL = "by the model's lengths (word pieces; near-equal ones by words)"


def bucketing_group(args: argparse.Namespace, data: Optional[Path], device: torch.device,
                    results: dict[str, Any]) -> None:
    """What padding costs: FMIT l = 3 with the MiniLM predicts the first `--bucketing-tweets` tweets
    of `--data` in the training data loader's batches ("bucket" sampler, 10% noise), sorted by words
    or, as `train` sorts them, by `Model.sorting_lengths`."""
    rng = random.Random(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    pool = [decorate(words, rng, generator) for words in read_tweets(data, rng)[: args.bucketing_tweets]]
    torch.manual_seed(0)
    model = build_tagger(TAGGERS["FMIT l=3"], OFFLINE_TEXT_MODEL, Vocabulary({"labels": LABELS}), device).eval()
    predictor = SentenceTaggerPredictor(model, TwitterMnerReader())
    sampler = BucketBatchSampler(BATCH_SIZE)
    orders = {BY_WORDS: sampler.batches(pool, args.seed),
              BY_MODEL: sampler.batches(pool, args.seed, lengths=model.sorting_lengths(pool))}
    rows = {}
    extra = {}
    for name, order in orders.items():
        batches = [[pool[i] for i in batch] for batch in order]

        def predict(batches: list[list[TaggingInstance]] = batches) -> None:
            with bf16_autocast(device, args.bf16):
                for batch in batches:
                    predictor.predict_instances(batch)

        rows[name] = predict
        extra[name] = {"padding": padding_use(batches), "batches": len(batches)}
    setting = f"FMIT l=3, MiniLM (offline, 6 x 384), {len(pool)} tweets of {results['data_name']}"
    record_group(results, "bucketing", setting, rows, len(pool), args, device, extra=extra)


def positions(batch_size: int, cells: int, objects: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """head / tail of full lattices of `cells` cells: [CLS], n words, [SEP], `objects` objects."""
    words = cells - 2 - objects
    head = torch.arange(cells).repeat(batch_size, 1)
    head[:, words + 2 :] = torch.randint(1, words + 1, (batch_size, objects), generator=generator)
    tail = head.clone()
    tail[:, words + 2 :] = (head[:, words + 2 :] + torch.randint(0, 3, (batch_size, objects), generator=generator)
                            ).clamp(max=words)
    return head, tail


def fusion_group(args: argparse.Namespace, device: torch.device, results: dict[str, Any]) -> None:
    generator = torch.Generator().manual_seed(2)
    torch.manual_seed(0)
    fusion = RelativePositionFusion(512).to(device).eval()
    for length in args.fusion_lengths:
        head, tail = (t.to(device) for t in positions(BATCH_SIZE, length, MAX_OBJECTS, generator))

        def gather(head: torch.Tensor = head, tail: torch.Tensor = tail) -> None:
            with torch.inference_mode():
                fusion(head, tail)

        def naive(head: torch.Tensor = head, tail: torch.Tensor = tail) -> None:
            with torch.inference_mode():
                fusion.naive_forward(head, tail)

        record_group(results, "fusion", f"L = {length}", {"gather": gather, "naive (L, L, 4d) x (4d, d)": naive},
                     BATCH_SIZE, args, device, baseline="gather")
    # One FMIT l = 3 forward at the paper's longest windows: 128 words + 8 objects (138 cells).
    encoder = FlatLatticeTransformer(num_layers=3).to(device).eval()
    head, tail = (t.to(device) for t in positions(BATCH_SIZE, 128 + 2 + MAX_OBJECTS, MAX_OBJECTS, generator))
    inputs = torch.randn(BATCH_SIZE, head.size(1), 512, device=device)

    def forward() -> None:
        with torch.inference_mode(), bf16_autocast(device, args.bf16):
            encoder(inputs, None, head=head, tail=tail)

    relative_bytes = BATCH_SIZE * head.size(1) ** 2 * 512 * 4
    record_group(results, "fusion", "FMIT l=3 forward, 16 x (128 words + 8 objects)", {"FMIT l=3": forward},
                 BATCH_SIZE, args, device, extra={"FMIT l=3": {"R_bytes": relative_bytes}})


# ---------------------------------------------------------------------------------------- group 6
PLAIN = "plain Transformer (w/o Rel)"
FMIT_L3 = "FMIT l=3"
DENSE = "FMIT l=3, dense R (before)"
LOOKUPS = "FMIT l=3, column lookups (before)"


def with_column_lookups(encoder: FlatLatticeTransformer, *args: Any, **kwargs: Any) -> torch.Tensor:
    """`encoder`'s forward with the objects' columns looked up per pair, not by windows (`column_windows`)."""
    for layer in encoder.layers:
        layer.attention.column_windows = False
    try:
        return encoder(*args, **kwargs)
    finally:
        for layer in encoder.layers:
            layer.attention.column_windows = None


def dense_r_bytes(cells: int) -> int:
    """What the dense formulation's `R` alone takes at batch 16: (16, cells, cells, 512) float32."""
    return BATCH_SIZE * cells**2 * 512 * 4


def long_rows(args: argparse.Namespace, device: torch.device) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """
    The long group's calls, length by length: (words, cells, {mode: {row name: call}}), the same models,
    inputs and random numbers in every process (so that `--long-memory-probe` rebuilds a row exactly).
    """
    from allennlp_light.modules.seq2seq_encoders import PytorchTransformer

    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    fmit = FlatLatticeTransformer(num_layers=3).to(device)
    plain = PytorchTransformer(input_dim=512, num_layers=3, feedforward_hidden_dim=2048, num_attention_heads=8,
                               dropout_prob=0.2).to(device)
    for words in args.long_lengths:
        cells = words + 2 + MAX_OBJECTS
        head, tail = (t.to(device) for t in positions(BATCH_SIZE, cells, MAX_OBJECTS, generator))
        inputs = torch.randn(BATCH_SIZE, cells, 512, generator=generator).to(device)
        mask = torch.ones(BATCH_SIZE, cells, dtype=torch.bool, device=device)
        target = torch.randn(BATCH_SIZE, cells, 512, generator=generator).to(device)
        calls: dict[str, Callable[[], torch.Tensor]] = {
            PLAIN: functools.partial(plain, inputs, mask),
            FMIT_L3: functools.partial(fmit, inputs, mask, head=head, tail=tail),
        }
        if words <= args.long_dense_words:
            calls[DENSE] = functools.partial(fmit.dense_forward, inputs, mask, head=head, tail=tail)
        if args.long_column_lookups:
            calls[LOOKUPS] = functools.partial(with_column_lookups, fmit, inputs, mask, head=head, tail=tail)
        forward_rows = {}
        train_rows = {}
        for name, call in calls.items():
            module = plain if name == PLAIN else fmit
            optimizer = torch.optim.Adam(module.parameters(), lr=1e-5)

            def forward(call: Callable[[], torch.Tensor] = call, module: torch.nn.Module = module) -> None:
                module.eval()
                with torch.inference_mode(), bf16_autocast(device, args.bf16):
                    call()

            def step(call: Callable[[], torch.Tensor] = call, module: torch.nn.Module = module,
                     optimizer: torch.optim.Optimizer = optimizer, target: torch.Tensor = target) -> None:
                module.train()
                with bf16_autocast(device, args.bf16):
                    loss = (call().float() * target).mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            forward_rows[name] = forward
            if name != LOOKUPS:  # with a gradient the columns are looked up anyway
                train_rows[name] = step
        yield words, cells, {"forward": forward_rows, "training step": train_rows}


def long_memory_probe(args: argparse.Namespace, device: torch.device) -> list[Optional[int]]:
    """`--long-memory-probe WORDS MODE ROW`: that row's resident-set rise over `--long-memory-calls` calls,
    in this (fresh) process, after one warm-up call."""
    words, mode, name = int(args.long_memory_probe[0]), args.long_memory_probe[1], args.long_memory_probe[2]
    for length, _, modes in long_rows(args, device):
        if length == words:
            call = modes[mode][name]
            call()
            return [peak_memory(call, device) for _ in range(args.long_memory_calls)]
    raise ValueError(f"--long-memory-probe: {words} words is not one of --long-lengths {args.long_lengths}")


def fresh_memory_calls(args: argparse.Namespace, words: int, mode: str, name: str) -> list[Optional[int]]:
    """`long_memory_probe` of one row in a new process: the rise a call makes of a heap no other row
    has shaped (in the benchmark's own process the same call's rise moves with what earlier rows left
    in glibc's heap: the plain transformer's at 512 words was 213-278 MiB in one run, 327-392 in another)."""
    command = [sys.executable, __file__, "--long-memory-probe", str(words), mode, name, "--device", args.device,
               "--long-lengths", *map(str, args.long_lengths), "--long-dense-words", str(args.long_dense_words),
               "--long-memory-calls", str(args.long_memory_calls)]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--long-column-lookups"] if args.long_column_lookups else []
    command += ["--bf16"] if args.bf16 else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {name!r} at {words} words failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def long_group(args: argparse.Namespace, device: torch.device, results: dict[str, Any]) -> None:
    """
    Long inputs: FMIT l = 3 (d = 512) forward and training step at batch 16 x (L words + 8 objects),
    against the same-size plain `pytorch_transformer` (the w/o Rel encoder) and against the dense
    formulation (`FlatLatticeTransformer.dense_forward`, the `(batch, L, L, d)` `R`), the latter only
    up to `--long-dense-words` words (its `R` alone is recorded for every length).
    """
    results["long"] = {"dense_words_max": args.long_dense_words, "repeats": args.long_repeats,
                       "memory_calls": args.long_memory_calls, "memory_processes": args.long_memory_processes}
    for words, cells, modes in long_rows(args, device):
        extra = {DENSE: {"R_bytes": dense_r_bytes(cells)}}
        for mode, rows in modes.items():
            if mode not in args.long_modes:
                continue
            setting = f"{mode}, 16 x ({words} words + 8 objects)"
            memory = (functools.partial(fresh_memory_calls, args, words, mode) if args.long_memory_processes == "fresh"
                      else None)
            record_group(results, "long", setting, rows, BATCH_SIZE, args, device, baseline=PLAIN, extra=extra,
                         memory=memory)
            entry = results["groups"]["long"][setting]
            entry.update({"mode": mode, "words": words, "cells": cells, "dense_R_bytes": dense_r_bytes(cells)})
            for other, key in ((DENSE, "ratio_to_dense"), (LOOKUPS, "ratio_to_lookups")):
                if other in rows:
                    entry["rows"][FMIT_L3][key] = paired_ratio(entry["rows"][FMIT_L3]["times_s"],
                                                               entry["rows"][other]["times_s"])
            # Saved as it goes: the long rows take long, a stopped run keeps what it measured.
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


def merge_long(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results file of the long group from the files of several processes (each row's ratios are still
    measured within one process; a later file's rows replace an earlier one's at the same setting, files
    taken in the order of their shortest length); their commands are kept in that order."""
    if any(set(part["groups"]) != {"long"} for part in parts):
        raise ValueError("only results files of the long group alone can be merged")
    ordered = sorted(parts, key=lambda part: min(e["words"] for e in part["groups"]["long"].values()))
    merged = dict(parts[0], groups={"long": {}}, commands=[part["command"] for part in ordered])
    repeats = " / ".join(sorted({str(part["long"]["repeats"]) for part in parts}))
    merged["long"] = dict(parts[0]["long"], repeats=repeats)
    for part in ordered:
        merged["groups"]["long"].update(part["groups"]["long"])
    return merged


def render_long(results: dict[str, Any]) -> str:
    """The long-input table: time, peak memory and their growth with L, FMIT against plain and dense."""
    info = results["machine"]
    entries = results["groups"]["long"]
    lines = [
        f"Machine: {info['processor']}, {info['cpu_count']} CPUs, torch {info['torch']} with "
        f"{info['torch_threads']} threads, device `{results['device']}`" + (f" ({info['cuda']})" if info.get("cuda")
                                                                          else "")
        + f"; {results['long']['repeats']} timed rounds per row. "
        + ("Commands (a later one's rows replace an earlier one's): "
           + " and ".join(f"`{c}`" for c in results["commands"])
           if "commands" in results else f"Command: `{results['command']}`") + ".",
        "Batch 16, d = 512, 8 heads, feed-forward 2048, 3 layers; time in ms per call, median (interquartile "
        "range); ratios are medians (range) of per-round ratios; MiB: the resident set's rise over a call, "
        f"median (range) of {results['long'].get('memory_calls', 1)} calls"
        + (" in a fresh process per row (after one warm-up call)"
           if results["long"].get("memory_processes") == "fresh" else "") + ", its ratio that of the medians; "
        "tensor MiB: the most tensor bytes alive at once in one call (what CUDA's `max_memory_allocated` "
        "counts, taken by hand on CPU), exact and the same in every run; growth is the "
        "row's time (memory) over the previous length's.",
        "",
    ]
    for mode in ("forward", "training step"):
        title = "`inference_mode`" if mode == "forward" else "forward, backward and Adam step"
        lines.append(f"**Long inputs, {mode} ({title})**")
        lines.append("")
        rows = []
        previous: dict[str, Row] = {}
        for entry in (e for e in entries.values() if e["mode"] == mode):
            plain, fmit = entry["rows"][PLAIN], entry["rows"][FMIT_L3]
            dense = entry["rows"].get(DENSE)

            def growth(name: str, row: Row, key: str, previous: dict[str, Row] = previous) -> str:
                before = previous.get(name)
                if before is None or not before.get(key) or not row.get(key):
                    return "-"
                return f"{row[key] / before[key]:.1f}x"

            def memory_ratio(key: str, fmit: Row = fmit, plain: Row = plain) -> str:
                return f"{fmit[key] / plain[key]:.2f}" if fmit.get(key) and plain.get(key) else "n/a"

            rows.append([
                f"{entry['words']} + 8 ({entry['cells']} cells)",
                _time(plain), _time(fmit), _ratio(fmit),
                _time(dense) if dense else "not run",
                (lambda r: f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})")(fmit["ratio_to_dense"]) if dense
                else "-",
                _mib_calls(plain), _mib_calls(fmit), memory_ratio("peak_memory_bytes"),
                _mib(plain.get("tensor_peak_bytes")), _mib(fmit.get("tensor_peak_bytes")),
                memory_ratio("tensor_peak_bytes"),
                _mib_calls(dense) if dense else "-",
                f"{entry['dense_R_bytes'] / 2**30:.2f}",
                f"{growth(PLAIN, plain, 'median_s')} / {growth(FMIT_L3, fmit, 'median_s')}",
                f"{growth(PLAIN, plain, 'peak_memory_bytes')} / {growth(FMIT_L3, fmit, 'peak_memory_bytes')}",
            ])
            previous = {PLAIN: plain, FMIT_L3: fmit}
        lines.append(markdown_table(
            ["L words + objects", "plain ms", "FMIT ms", "FMIT x plain", "dense-R ms", "FMIT x dense",
             "plain MiB", "FMIT MiB", "FMIT mem x plain", "plain tensor MiB", "FMIT tensor MiB",
             "FMIT tensor x plain", "dense MiB", "dense R alone GiB",
             "time growth plain / FMIT", "memory growth plain / FMIT"], rows))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- report
def _mib(value: Optional[int]) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def _mib_calls(row: Row) -> str:
    """A long row's resident-set rise: the median, and the range where several calls were measured."""
    calls = row.get("peak_memory_calls_bytes") or []
    if len(calls) < 2 or None in calls:
        return _mib(row["peak_memory_bytes"])
    return f"{_mib(row['peak_memory_bytes'])} ({_mib(min(calls))}-{_mib(max(calls))})"


def _ratio(row: Row) -> str:
    ratio = row["ratio_to_baseline"]
    return f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})"


def _time(row: Row) -> str:
    return f"{1000 * row['median_s']:.0f} ({1000 * row['q1_s']:.0f}-{1000 * row['q3_s']:.0f})"


def render(results: dict[str, Any]) -> str:
    info = results["machine"]
    padding = results["padding"]
    lines = [
        f"Machine: {info['processor']}, {info['cpu_count']} CPUs, torch {info['torch']} with "
        f"{info['torch_threads']} threads, device `{results['device']}`"
        + (f" ({info['cuda']})" if info.get("cuda") else "") + f"; {results['tweets_per_batch_set']} tweets in "
        f"{results['batches']} batches of 16 ({results['words_per_tweet']:.1f} words and "
        f"{results['objects_per_tweet']:.1f} objects per tweet, from {results['data_name']}; real share of the "
        f"padded word slots {100 * padding['word_slots']:.0f}%, word pieces {100 * padding['word_pieces']:.0f}%, "
        f"lattice cells {100 * padding['lattice_cells']:.0f}%); "
        f"{results['repeats']} rounds ({results['fusion_repeats']} for the fusion). "
        f"Command: `{results['command']}`" + (f" ({results['note']})" if results.get("note") else "") + ".",
        "Times are milliseconds per set of batches, median (interquartile range); ratios are medians (range) "
        "of per-round ratios to the group's first row.",
        "",
    ]
    groups = {name: group for name, group in results["groups"].items() if name != "long"}
    titles = {"inference": "End-to-end inference (predictor, `inference_mode`)",
              "training": "Training step (forward + EBD + backward + Adam)"}
    for group in ("inference", "training"):
        for setting, entry in groups.get(group, {}).items():
            lines.append(f"**{titles[group]}, {setting}**")
            lines.append("")
            rows = [[name, _time(row), f"{row['items_per_s']:.1f}", _ratio(row), _mib(row["peak_memory_bytes"])]
                    for name, row in entry["rows"].items()]
            lines.append(markdown_table(["model", "ms", "tweets/s", "x BERT-CRF", "peak MiB"], rows))
    breakdown = [
        [f"{name}, {setting}"] + [_share(row["components_s"], part) for part in ("text_field_embedder", "projection",
                                                                              "encoder", "rest")]
        for setting, entry in groups.get("inference", {}).items()
        for name, row in entry["rows"].items() if "components_s" in row
    ]
    if breakdown:
        lines.append("**Where inference time goes** (one call timed with forward hooks: ms and share; *rest* is "
                     "lattice building, CRF emissions and decoding, entity confidences, collation)")
        lines.append("")
        lines.append(markdown_table(["model", "text encoder", "projection (Eq 1-2)", "interaction", "rest"],
                                    breakdown))
    for setting, entry in groups.get("interaction", {}).items():
        lines.append(f"**Interaction module alone ({setting}, `inference_mode`)**")
        lines.append("")
        rows = [[name, f"{row['parameters'] / 1e6:.1f}M", _time(row), f"{row['items_per_s']:.0f}", _ratio(row),
                 _mib(row["peak_memory_bytes"])] for name, row in entry["rows"].items()]
        lines.append(markdown_table(["module", "parameters", "ms", "tweets/s", "x FMIT l=1", "peak MiB"], rows))
    fusion = groups.get("fusion", {})
    if fusion:
        lines.append("**Relative position fusion, batch 16 (`inference_mode`)**")
        lines.append("")
        rows = []
        for setting, entry in fusion.items():
            for name, row in entry["rows"].items():
                label = f"{setting}: {name}"
                if "R_bytes" in row:
                    label += f" (R alone: {row['R_bytes'] / 2**20:.0f} MiB)"
                rows.append([label, _time(row), _ratio(row) if name != entry["baseline"] else "1",
                             _mib(row["peak_memory_bytes"])])
        lines.append(markdown_table(["setting", "ms", "x gather", "peak MiB"], rows))
    for setting, entry in groups.get("bucketing", {}).items():
        lines.append(f"**Padding: training batches sorted by words or by the model's lengths ({setting}, "
                     "predicted under `inference_mode`; real share of the padded slots)**")
        lines.append("")
        rows = [[name, _time(row), f"{row['items_per_s']:.1f}", _ratio(row)]
                + [f"{100 * row['padding'][kind]:.0f}%" for kind in ("word_pieces", "word_slots", "lattice_cells")]
                for name, row in entry["rows"].items()]
        lines.append(markdown_table(["batches sorted", "ms", "tweets/s", "x by words", "word pieces", "word slots",
                                     "lattice cells"], rows))
    profiled = [
        [f"{group} / {setting} / {name}", ", ".join(f"{op['op'].replace('aten::', '')} {100 * op['share']:.0f}%"
                                                   for op in row["top_operators"][:5])]
        for group, settings in groups.items() for setting, entry in settings.items()
        for name, row in entry["rows"].items() if "top_operators" in row
    ]
    if profiled:
        lines.append("**Top operators** (torch.profiler, share of self CPU time of one call)")
        lines.append("")
        lines.append(markdown_table(["row", "operators"], profiled))
    return "\n".join(lines)


def headline(results: dict[str, Any]) -> str:
    """The README's headline speed table: FMIT l = 3's cost against BERT-CRF's, end to end, per text encoder."""
    groups = results["groups"]
    settings = [setting for group in ("inference", "training") for setting in groups.get(group, {})]
    settings = list(dict.fromkeys(settings))
    names = {"inference": "end-to-end inference", "training": "training step (EBD included)"}
    rows = []
    for group in ("inference", "training"):
        entries = groups.get(group, {})
        if entries:
            rows.append([names[group], *(_ratio(entries[setting]["rows"]["FMIT l=3"]) if setting in entries else "-"
                                         for setting in settings)])
    info = results["machine"]
    return (f"FMIT l = 3's time as a multiple of BERT-CRF's, median (range) of per-round ratios; "
            f"{info['cpu_count']} CPUs, torch {info['torch']} with {info['torch_threads']} threads, "
            f"device `{results['device']}`:\n\n"
            + markdown_table(["FMIT l = 3, x BERT-CRF", *settings], rows))


def _share(components: dict[str, float], part: str) -> str:
    seconds = components.get(part)
    if seconds is None:
        return "-"
    return f"{1000 * seconds:.0f} ({100 * seconds / components['total']:.0f}%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batches", type=int, default=3, help="batches of 16 tweets per timed call")
    parser.add_argument("--train-batches", type=int, default=1, help="of those, per timed training call")
    parser.add_argument("--fusion-repeats", type=int, default=3, help="rounds of the fusion group")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS)
    parser.add_argument("--encoders", nargs="+", default=["bert-base", "minilm"], choices=["bert-base", "minilm"])
    parser.add_argument("--fusion-lengths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--long-lengths", type=int, nargs="+", default=[32, 64, 128, 256, 512, 1024],
                        help="words (+ 8 objects) of the long group")
    parser.add_argument("--long-dense-words", type=int, default=512,
                        help="longest input of the long group the dense-R formulation runs on")
    parser.add_argument("--long-repeats", type=int, default=3, help="rounds of the long group")
    parser.add_argument("--long-memory-calls", type=int, default=3,
                        help="calls of each long row whose resident-set rise is measured (the median is shown)")
    parser.add_argument("--long-modes", nargs="+", choices=["forward", "training step"],
                        default=["forward", "training step"],
                        help="what the long group measures (more rounds of one mode at one length, say)")
    parser.add_argument("--long-memory-processes", choices=["fresh", "same"], default="fresh",
                        help="the long group's resident-set rises: each row in a fresh process (after one warm-up "
                             "call), or in the benchmark's own process")
    parser.add_argument("--long-memory-probe", nargs=3, metavar=("WORDS", "MODE", "ROW"),
                        help=argparse.SUPPRESS)  # internal: one row's rises, printed as JSON (fresh_memory_calls)
    parser.add_argument("--long-column-lookups", action="store_true",
                        help="the long group's forward also with the objects' columns looked up (the code before)")
    parser.add_argument("--bucketing-tweets", type=int, default=2048, help="tweets of the bucketing group")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "twitter2015" / "train.txt"))
    parser.add_argument("--seed", type=int, default=13370)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--profile", nargs="*", default=[],
                        help="regexes over 'group/setting/row': profile one call of those rows")
    parser.add_argument("--output", help="results JSON file")
    parser.add_argument("--publish", action="store_true",
                        help="write the tables (docs/speed.md, the README's headline)")
    parser.add_argument("--render", nargs="+",
                        help="measure nothing: render (and --publish) this results file; several files of the "
                             "long group alone (one run split over processes) are merged into --output first")
    args = parser.parse_args()
    if args.render:
        if len(args.render) > 1:
            if not args.output:
                parser.error("--output is required to merge several results files")
            merged = merge_long([json.loads(Path(name).read_text()) for name in args.render])
            Path(args.output).write_text(json.dumps(merged, indent=2) + "\n")
        show(json.loads(Path(args.output if len(args.render) > 1 else args.render[0]).read_text()), args.publish)
        return
    if args.long_memory_probe:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(long_memory_probe(args, torch.device(args.device))))
        return
    if not args.output:
        parser.error("--output is required")
    logging.basicConfig(format="%(asctime)s - %(message)s", level=logging.INFO)
    for noisy in ("transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_plugins()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = Path(args.data) if args.data else None
    batches = make_batches(data, args.batches, args.seed)
    results: dict[str, Any] = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine(),
        "torch_num_threads": torch.get_num_threads(),
        "device": str(device),
        "bf16": args.bf16 and device.type == "cuda",
        "repeats": args.repeats,
        "fusion_repeats": args.fusion_repeats,
        "train_batches": args.train_batches,
        "batches": len(batches),
        "tweets_per_batch_set": sum(len(batch) for batch in batches),
        "data": str(data) if data is not None and data.is_file() else "fixed length distribution",
        "data_name": (f"{data.parent.name}/{data.name}" if data is not None and data.is_file()
                      else "a fixed length distribution"),
        "words_per_tweet": statistics.mean(len(i) for batch in batches for i in batch),
        "objects_per_tweet": statistics.mean(len(i.visual.spans) for batch in batches for i in batch if i.visual),
        "padding": padding_use(batches),
        "groups": {},
    }
    started = time.time()
    if "inference" in args.groups or "training" in args.groups:
        tagger_groups(args, batches, device, results)
    if "interaction" in args.groups:
        interaction_group(args, batches, device, results)
    if "fusion" in args.groups:
        fusion_group(args, device, results)
    if "bucketing" in args.groups:
        bucketing_group(args, data, device, results)
    if "long" in args.groups:
        long_group(args, device, results)
    results["wall_seconds"] = time.time() - started
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    show(results, args.publish)


def show(results: dict[str, Any], publish_tables: bool) -> None:
    """Prints (and publishes) the tables of the groups `results` holds: the long group has its own
    table (`speed_long`, results file of its own), so running it alone leaves the others' tables be."""
    tables = {}
    if set(results["groups"]) - {"long"}:
        tables["speed"] = render(results)
        tables["headline_speed"] = headline(results)
    if "long" in results["groups"]:
        tables["speed_long"] = render_long(results)
    for name, table in tables.items():
        print(table)
        if publish_tables:
            publish(name, table)


if __name__ == "__main__":
    main()
