"""`allennlp predict ARCHIVE INPUT`: one JSON line out per line in, in order, streamed."""
import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Optional, Union

from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.common.archival import load_archive
from fmit_plugin.predictors.predictor import Predictor

logger = logging.getLogger(__name__)


@Subcommand.register("predict")
class Predict(Subcommand):
    """Registered as a `Subcommand` with name "predict"."""

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        subparser = parser.add_parser(
            self.name, description="Tag a JSON-lines file with a trained model.", help="Predict."
        )
        subparser.add_argument("archive_file", help="model.tar.gz (or a serialization directory)")
        subparser.add_argument("input_file", help='JSON lines: {"tokens": [...]} or {"sentence": "..."}; - for stdin')
        subparser.add_argument("--output-file", help="where to write the JSON lines (default: stdout)")
        subparser.add_argument("--predictor", help="a registered Predictor (default: the model's own)")
        subparser.add_argument("--batch-size", type=int, default=32)
        subparser.add_argument("--cuda-device", type=int, default=-1)
        subparser.add_argument("--silent", action="store_true", help="do not echo predictions to stdout")
        subparser.add_argument("--use-dataset-reader", action="store_true",
                               help="read INPUT with the archive's dataset reader instead of as JSON lines")
        subparser.add_argument("--skip-errors", action="store_true",
                               help="exit 0 even if some lines could not be tagged")
        subparser.add_argument("-o", "--overrides", default="", help="JSON overrides of the archived config")
        subparser.set_defaults(func=predict_from_args)
        return subparser


def predict_from_args(args: argparse.Namespace) -> None:
    errors = predict_file(
        args.archive_file, args.input_file, args.output_file, args.predictor, args.batch_size,
        args.cuda_device, args.silent, args.use_dataset_reader, args.overrides,
    )
    if errors and not args.skip_errors:
        print(f"{errors} input lines could not be tagged (see their \"error\" fields)", file=sys.stderr)
        sys.exit(1)


def _json_lines(handle: IO[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or the exception) for every non-blank line."""
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            yield number, ValueError(f"line {number} is not valid JSON: {error.msg}")


def predict_file(
    archive_file: Union[str, Path],
    input_file: str,
    output_file: Optional[str] = None,
    predictor_name: Optional[str] = None,
    batch_size: int = 32,
    cuda_device: int = -1,
    silent: bool = False,
    use_dataset_reader: bool = False,
    overrides: str = "",
) -> int:
    """Tag `input_file`; returns how many lines failed. Each failed line still gets an output line
    holding an `"error"` field, so outputs and inputs always line up."""
    if input_file != "-" and not Path(input_file).is_file():
        raise ConfigurationError(f"Input file not found: {input_file}")
    archive = load_archive(archive_file, cuda_device=cuda_device, overrides=overrides)
    name = predictor_name or archive.model.default_predictor or "sentence_tagger"
    predictor = Predictor.by_name(name)(archive.model, archive.validation_dataset_reader)
    errors = 0
    # AllenNLP's behaviour: predictions go to --output-file if given, and to stdout unless --silent.
    output: Optional[IO[str]] = open(output_file, "w", encoding="utf-8") if output_file else None
    try:
        def emit(results: list[dict[str, Any]]) -> None:
            for result in results:
                text = json.dumps(result, ensure_ascii=False)
                if output is not None:
                    output.write(text + "\n")
                if not silent:
                    print(text, flush=False)
            if output is not None:
                output.flush()
            sys.stdout.flush()

        if use_dataset_reader:
            instances = archive.validation_dataset_reader.read(input_file)
            for start in range(0, len(instances), batch_size):
                emit(predictor.predict_instances(instances[start : start + batch_size]))
            return 0
        handle: IO[str] = sys.stdin if input_file == "-" else open(input_file, encoding="utf-8")
        try:
            pending: list[tuple[int, Any]] = []
            for item in _json_lines(handle):
                pending.append(item)
                if len(pending) >= batch_size:
                    results, failed = _predict_batch(predictor, pending)
                    errors += failed
                    emit(results)
                    pending = []
            if pending:
                results, failed = _predict_batch(predictor, pending)
                errors += failed
                emit(results)
        finally:
            if handle is not sys.stdin:
                handle.close()
    finally:
        if output is not None:
            output.close()
    return errors


def _predict_batch(predictor: Predictor, items: list[tuple[int, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Predict the good lines together; a bad line becomes `{"line": n, "error": ...}` in its place."""
    results: list[Optional[dict[str, Any]]] = [None] * len(items)
    instances, slots = [], []
    for slot, (number, item) in enumerate(items):
        try:
            if isinstance(item, Exception):
                raise item
            instances.append(predictor.json_to_instance(item))
            slots.append(slot)
        except (ValueError, TypeError, KeyError) as error:
            failure: dict[str, Any] = {"line": number, "error": str(error)}
            if isinstance(item, dict) and "id" in item:
                failure["id"] = item["id"]
            results[slot] = failure
    if instances:
        for slot, result in zip(slots, predictor.predict_instances(instances)):
            results[slot] = result
    failed = sum(1 for r in results if r is not None and "error" in r)
    return [r for r in results if r is not None], failed
