"""`allennlp evaluate ARCHIVE INPUT`: span P/R/F1 overall and per type, printed and as JSON, with the
scored file's fingerprint (SHA-256, counts, known dataset version) under "input_fingerprint"."""
import argparse
import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.predict import to_json_line
from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.common import distributed
from fmit_plugin.common.file_utils import atomic_write, dump_metrics
from fmit_plugin.data.data_loader import DataLoader
from fmit_plugin.data.dataset_fingerprint import fingerprint_dataset
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.models.archival import load_archive, read_archive_meta
from fmit_plugin.training.evaluation import evaluate

logger = logging.getLogger(__name__)


@Subcommand.register("evaluate")
class Evaluate(Subcommand):
    """Registered as a `Subcommand` with name "evaluate"."""

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        subparser = parser.add_parser(
            self.name, description="Evaluate a trained model on a data file.", help="Evaluate a model."
        )
        subparser.add_argument("archive_file", help="model.tar.gz (or a serialization directory)")
        subparser.add_argument("input_file", help="data file in the reader's format")
        subparser.add_argument("--output-file", help="write the metrics here as JSON")
        subparser.add_argument("--predictions-output-file",
                               help="write one JSON line per instance, in input order: its image id and "
                               "source, the words, the gold tags, the predicted tags and entities")
        subparser.add_argument("--cuda-device", type=int, default=-1)
        subparser.add_argument("--batch-size", type=int, help="override the config's batch size")
        subparser.add_argument("-o", "--overrides", default="", help="JSON overrides of the archived config")
        subparser.add_argument("--feature-store",
                               help="SQLite feature store to read and add visual features to (default: the "
                                    "archive's store, read-only, with new features kept in memory)")
        subparser.set_defaults(func=evaluate_from_args)
        return subparser


def evaluate_from_args(args: argparse.Namespace) -> None:
    evaluate_archive(args.archive_file, args.input_file, args.output_file, args.predictions_output_file,
                     args.cuda_device, args.batch_size, args.overrides, args.feature_store)


def evaluate_archive(
    archive_file: Union[str, Path],
    input_file: Union[str, Path],
    output_file: Optional[Union[str, Path]] = None,
    predictions_output_file: Optional[Union[str, Path]] = None,
    cuda_device: int = -1,
    batch_size: Optional[int] = None,
    overrides: str = "",
    feature_store: Optional[Union[str, Path]] = None,
) -> dict[str, Any]:
    if not Path(input_file).is_file():
        raise ConfigurationError(f"Input file not found: {input_file}")
    for flag, target in (("--output-file", output_file), ("--predictions-output-file", predictions_output_file)):
        if target and Path(target).exists() and os.path.samefile(input_file, target):
            raise ConfigurationError(f"{flag} {target} is the input file: it would be overwritten")
    joined = distributed.init_from_environment()
    try:
        return _evaluate_archive(archive_file, input_file, output_file, predictions_output_file,
                                 distributed.local_cuda_device(cuda_device), batch_size, overrides, feature_store)
    finally:
        if joined:
            distributed.destroy()


def _evaluate_archive(
    archive_file: Union[str, Path], input_file: Union[str, Path], output_file: Optional[Union[str, Path]],
    predictions_output_file: Optional[Union[str, Path]], cuda_device: int, batch_size: Optional[int],
    overrides: str, feature_store: Optional[Union[str, Path]],
) -> dict[str, Any]:
    """Under `torchrun` every worker scores its share of the batches (the loader deals them out), the
    counts are summed over workers, and the primary worker prints and writes what one process would."""
    primary = distributed.is_primary()
    archive = load_archive(archive_file, cuda_device=cuda_device, overrides=overrides, feature_store=feature_store)
    config = archive.config
    loader_params = config.get("validation_data_loader", None) or config.get("data_loader")
    loader_params = loader_params.duplicate()
    sampler = loader_params.get("batch_sampler", None)
    target = sampler if sampler is not None else loader_params
    target["shuffle"] = False
    if batch_size is not None:
        target["batch_size"] = batch_size
    instances = archive.validation_dataset_reader.read(str(input_file))
    # Before any computation: a gold label the model does not know is an error naming its line.
    archive.model.vocab.check_labels(instances)
    fingerprint = fingerprint_dataset(input_file, instances)
    if primary:
        print(f"data: {fingerprint.describe()}")
    seen_as = _splits_with_this_file(archive_file, fingerprint.sha256)
    if seen_as and primary:
        print(f"data: the model's own {' and '.join(seen_as)} file (its training record has this SHA-256)")
    loader = DataLoader.from_params(loader_params, instances=instances)
    loader.index_with(archive.model.vocab)
    loader.set_sorting_lengths(archive.model.sorting_lengths(instances))
    predictions: Optional[list[dict[str, Any]]] = [] if predictions_output_file else None
    for index, instance in enumerate(instances):
        # The loader batches by length; the index puts the predictions back in input order.
        instance.metadata[_INDEX] = index
    device = archive.model.device()
    scores = evaluate(archive.model, loader, device, "evaluating", len(loader), predictions)
    if predictions is not None:
        gathered = distributed.gather_to_primary(predictions, "collecting predictions")
        predictions = [prediction for part in gathered or [] for prediction in part]
    metrics: dict[str, Any] = {**scores, "input_fingerprint": {**fingerprint.to_json(), "seen_by_model_as": seen_as}}
    if not primary:
        return metrics
    print(format_metrics(scores))
    if output_file:
        dump_metrics(output_file, metrics)
    if predictions_output_file and predictions is not None:
        lines = "".join(to_json_line(line) + "\n" for line in prediction_lines(instances, predictions))
        atomic_write(predictions_output_file, lambda temp: Path(temp).write_text(lines, encoding="utf-8"))
    return metrics


def _splits_with_this_file(archive_file: Union[str, Path], sha256: str) -> list[str]:
    """The splits of the archive's training record whose file has this hash: a score on the
    training file says nothing about generalisation, and one on the validation file chose the epoch."""
    datasets = read_archive_meta(archive_file).get("training_record", {}).get("datasets", {})
    return [split for split, fingerprint in datasets.items() if fingerprint and fingerprint["sha256"] == sha256]


_INDEX = "evaluation_index"


def prediction_lines(instances: list[TaggingInstance], predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per instance in input order, to join back to the data: `image_id`, `source`
    ("file:line"), `words`, `gold_tags` beside the predicted `tags`, and `entities`."""
    by_index = {prediction["metadata"][_INDEX]: prediction for prediction in predictions}
    if sorted(by_index) != list(range(len(instances))):
        raise RuntimeError(f"{len(by_index)} predictions for {len(instances)} instances")
    lines = []
    for index, instance in enumerate(instances):
        prediction = by_index[index]
        lines.append({
            "image_id": instance.image_id,
            "source": instance.metadata.get("source"),
            "words": prediction["words"],
            "gold_tags": instance.tags,
            "tags": prediction["tags"],
            "entities": prediction["entities"],
        })
    return lines


def format_metrics(metrics: dict[str, float]) -> str:
    """A table: one row per entity type (overall first, strict last), P / R / F1 in percent."""
    types = sorted({k.split("-", 2)[-1] for k in metrics if k.startswith("f1-measure-")} - {"overall"},
                   key=lambda name: (name.startswith("strict"), name))
    rows = [f"{'type':<16}{'precision':>10}{'recall':>10}{'f1':>10}"]
    for name in ["overall", *types]:
        values = [metrics.get(f"{m}-{name}", 0.0) * 100 for m in ("precision", "recall", "f1-measure")]
        rows.append(f"{name:<16}" + "".join(f"{v:>10.2f}" for v in values))
    if "loss" in metrics:
        rows.append(f"loss: {metrics['loss']:.4f}")
    return "\n".join(rows)
