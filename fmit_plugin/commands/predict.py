"""
`allennlp predict ARCHIVE INPUT`: one JSON line out per line in, in order, streamed.

The pipeline is three small steps, each replaceable: `_input_items` turns the input into numbered
items (parsed JSON, an instance from the dataset reader, or the exception that made a line bad),
`_predict_batch` turns a window of items into exactly as many results (a bad item gets a result with
an `"error"` field), and `PredictionWriter` writes and flushes each window's results as they come.
Inside a window the tweets are batched by length, so batches carry little padding; nothing holds
more than one window, so memory stays flat over any number of lines.

Under `torchrun` the windows are dealt out to the workers (`_predict_distributed`): a window is the
unit, so every batch is the one a single process makes and the output is byte-identical to it.
"""
import argparse
import contextlib
import json
import logging
import math
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Optional, Union

from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.common import distributed
from fmit_plugin.common.file_utils import TEMP_SUFFIX, rename_into_place, sigterm_raises
from fmit_plugin.data.data_loader import BucketBatchSampler
from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.predictors.predictor import Predictor
from fmit_plugin.vision.image_loading import ImageLoadReport
from fmit_plugin.visualization.prediction_picture import save_prediction_picture

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
        subparser.add_argument("--sort-window", type=int,
                               help="lines read ahead and batched by length (default: 8 batches from a file, "
                               "1 batch from stdin); output stays in input order")
        subparser.add_argument("--cuda-device", type=int, default=-1)
        subparser.add_argument("--silent", action="store_true", help="do not echo predictions to stdout")
        subparser.add_argument("--use-dataset-reader", action="store_true",
                               help="read INPUT with the archive's dataset reader instead of as JSON lines")
        subparser.add_argument("--skip-errors", action="store_true",
                               help="exit 0 even if some lines could not be tagged")
        subparser.add_argument("-o", "--overrides", default="", help="JSON overrides of the archived config")
        subparser.add_argument("--feature-store",
                               help="SQLite feature store to read and add visual features to (default: the "
                                    "archive's store, read-only, with new features kept in memory)")
        subparser.add_argument("--render-dir", help="also draw a PNG of each prediction that has an image here: "
                               "the image with its objects' boxes beside the tagged tweet")
        subparser.set_defaults(func=predict_from_args)
        return subparser


def predict_from_args(args: argparse.Namespace) -> None:
    errors = predict_file(
        args.archive_file, args.input_file, args.output_file, args.predictor, args.batch_size,
        args.cuda_device, args.silent, args.use_dataset_reader, args.overrides, args.render_dir, args.sort_window,
        feature_store=args.feature_store,
    )
    if errors and not args.skip_errors:
        if os.environ.get("RANK", "0") == "0":  # every worker exits 1 (the group is gone); rank 0 says why
            print(f"{errors} input lines could not be tagged (see their \"error\" fields)", file=sys.stderr)
        sys.exit(1)


@dataclass
class InputItem:
    """
    One unit of input: where it came from and what it holds.

    # Parameters

    line : `int`, optional
        1-based line number in a JSON-lines input.
    source : `str`, optional
        "file:line" of an instance read by the dataset reader.
    payload : `Any`
        The parsed JSON value, a `TaggingInstance`, or the `Exception` that made the line unusable.
    """

    line: Optional[int]
    source: Optional[str]
    payload: Any

    def failure(self, message: str) -> dict[str, Any]:
        """The output line of an item that could not be tagged."""
        result: dict[str, Any] = {}
        if self.line is not None:
            result["line"] = self.line
        if self.source is not None:
            result["source"] = self.source
        if isinstance(self.payload, dict) and "id" in self.payload:
            result["id"] = self.payload["id"]
        result["error"] = message
        return result


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
    render_dir: Optional[str] = None,
    sort_window: Optional[int] = None,
    feature_store: Optional[str] = None,
) -> int:
    """Tag `input_file`; returns how many lines failed. Each failed line still gets an output line
    holding an `"error"` field, so outputs and inputs always line up. With `render_dir`, every
    prediction with an image is also drawn there (`NNNNNN[-id].png`, N its output line).

    Lines are read `sort_window` at a time (default: 8 batches from a file; one batch from stdin,
    so that someone typing lines gets answers batch by batch, as with AllenNLP) and batched by
    length inside the window: random tweet lengths would otherwise leave much of each batch padding."""
    if batch_size < 1:
        raise ConfigurationError(f"--batch-size must be at least 1, got {batch_size}")
    stream = _is_stream(input_file)
    if sort_window is None:
        sort_window = batch_size if stream else 8 * batch_size
    if sort_window < batch_size:
        raise ConfigurationError(f"--sort-window ({sort_window}) must be at least --batch-size ({batch_size})")
    if output_file and not stream and Path(output_file).exists() and os.path.samefile(input_file, output_file):
        # Opening the output would empty the input before a line of it is read.
        raise ConfigurationError(f"--output-file {output_file} is the input file: it would be overwritten")
    joined = distributed.init_from_environment()
    try:
        if distributed.is_distributed() and stream:
            raise ConfigurationError(
                f"A distributed predict reads its input file in every worker: {input_file} is stdin or a "
                "pipe; give a regular file"
            )
        # torchrun stops the other workers with SIGTERM when one fails: unwind, removing the temporary output.
        with sigterm_raises() if distributed.is_distributed() else contextlib.nullcontext():
            return _predict_file(
                archive_file, input_file, output_file, predictor_name, batch_size,
                distributed.local_cuda_device(cuda_device), silent, use_dataset_reader, overrides, render_dir,
                sort_window, feature_store,
            )
    finally:
        if joined:
            distributed.destroy()


def _predict_file(
    archive_file: Union[str, Path], input_file: str, output_file: Optional[str], predictor_name: Optional[str],
    batch_size: int, cuda_device: int, silent: bool, use_dataset_reader: bool, overrides: str,
    render_dir: Optional[str], sort_window: int, feature_store: Optional[str],
) -> int:
    predictor = Predictor.from_path(archive_file, predictor_name, cuda_device, overrides, feature_store)
    if render_dir is not None:
        try:
            Path(render_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigurationError(f"Cannot create --render-dir {render_dir}: {error.strerror}") from error
    errors = 0
    unrendered = 0
    images = ImageCounts()
    reader = predictor.dataset_reader if use_dataset_reader else None
    distributed.barrier()  # every worker's model is loaded: the clock below times the tagging alone
    started = time.perf_counter()
    if not distributed.is_distributed():
        with PredictionWriter(output_file, echo=not silent) as writer:
            for window in _chunks(_input_items(input_file, reader), sort_window):
                results = _predict_batch(predictor, window, batch_size, images)
                errors += sum(1 for result in results if "error" in result)
                first_line = writer.lines_written + 1
                # The lines first: a picture that cannot be drawn must not cost its prediction.
                if not writer.write(results):
                    logger.warning("stdout was closed and there is no --output-file: stopping")
                    break
                if render_dir is not None:
                    unrendered += _render(results, first_line, Path(render_dir))
        ungrounded = predictor.ungrounded_inputs
        lines = writer.lines_written
    else:
        errors, unrendered, ungrounded, lines = _predict_distributed(
            predictor, reader, input_file, output_file, silent, batch_size, sort_window, render_dir, images
        )
        if not distributed.is_primary():
            return errors
    seconds = time.perf_counter() - started
    workers = f" by {distributed.world_size()} workers" if distributed.is_distributed() else ""
    logger.info("Tagged %d lines in %.2f s%s (%.1f lines/s, model loading not counted)",
                lines, seconds, workers, lines / max(seconds, 1e-9))
    if ungrounded:
        logger.warning(
            "%d inputs had an image but no regions (none given, none in the sidecar, none found by the detector): "
            "the model saw their whole image only (see their \"warnings\"; docs/serving.md says how to give regions)",
            ungrounded,
        )
    if unrendered:
        logger.warning("%d pictures could not be drawn in %s (the predictions are written)", unrendered, render_dir)
    images.log()
    return errors


def _predict_distributed(
    predictor: Predictor, reader: Optional[DatasetReader], input_file: str, output_file: Optional[str],
    silent: bool, batch_size: int, sort_window: int, render_dir: Optional[str], images: "ImageCounts",
) -> tuple[int, int, int, int]:
    """Under `torchrun`: every worker reads the input; window k (of `sort_window` lines) is predicted
    by worker k mod world_size exactly as one process predicts it (the same batches, so the same
    numbers), and the primary worker writes each round of windows in input order. Returns the
    errors, pictures not drawn, ungrounded inputs and output lines summed over workers (on every
    worker); the primary worker's `images` holds every worker's counts."""
    rank = distributed.rank()
    # Visual objects only for this worker's windows: the reader would extract them for every line.
    deferred = reader if isinstance(reader, TwitterMnerReader) and reader.visual_objects is not None else None
    errors = unrendered = lines = 0
    writer = PredictionWriter(output_file, echo=not silent, atomic=True) if distributed.is_primary() else None
    with writer if writer is not None else contextlib.nullcontext():
        with deferred.visual_objects_deferred() if deferred is not None else contextlib.nullcontext():
            windows = _chunks(_input_items(input_file, reader), sort_window)
            for number, round_ in enumerate(distributed.rounds(windows)):
                mine = round_[rank] if rank < len(round_) else []
                instances = [item.payload for item in mine if isinstance(item.payload, TaggingInstance)]
                if deferred is not None and instances:
                    deferred.attach_visual_objects(instances)
                results = _predict_batch(predictor, mine, batch_size, images) if mine else []
                errors += sum(1 for result in results if "error" in result)
                lines += len(results)
                if render_dir is not None:
                    first_line = (number * distributed.world_size() + rank) * sort_window + 1
                    unrendered += _render(results, first_line, Path(render_dir))
                gathered = distributed.gather_to_primary(results, "collecting predictions")
                going_on = True
                if writer is not None and gathered is not None:
                    for part in gathered:
                        if part and not writer.write(part):
                            logger.warning("stdout was closed and there is no --output-file: stopping")
                            going_on = False
                            break
                if not distributed.broadcast_from_primary(going_on):
                    break
    counts = distributed.gather_to_primary(images, "summing image counts")
    for worker_counts in (counts or [])[1:]:  # the primary worker's own are in `images` already
        images.update(worker_counts)
    totals = distributed.sum_across_workers(errors, unrendered, predictor.ungrounded_inputs, lines)
    return int(totals[0]), int(totals[1]), int(totals[2]), int(totals[3])


@dataclass
class ImageCounts:
    """
    What became of the images the input asked for, for the one summary line at the end of a run
    (each line's own `"warnings"` say it for that line).

    # Parameters

    report : `ImageLoadReport`
        Outcomes of the images the model's visual objects were extracted from.
    ignored : `int`
        Images asked for that the model never looked at (a text-only model, a tweet without words).
    """

    report: ImageLoadReport = field(default_factory=ImageLoadReport)
    ignored: int = 0

    def add(self, instance: TaggingInstance) -> None:
        if not (instance.image_id or instance.image_path):
            return
        if instance.visual is None:
            self.ignored += 1
        else:
            self.report.count(instance.visual.image_status, instance.visual.image_message)

    def update(self, other: "ImageCounts") -> None:
        """Adds another worker's counts."""
        self.report.update(other.report)
        self.ignored += other.ignored

    def line(self) -> Optional[str]:
        """E.g. "images: 3 read, 4 empty (missing 2, corrupt 1, not_a_file 1)"; `None` if none was asked for."""
        parts = [self.report.summary()] if self.report.total else []
        if self.ignored:
            parts.append(f"{self.ignored} images ignored (a text-only model, or a tweet without words)")
        return "; ".join(parts) or None

    def log(self) -> None:
        line = self.line()
        if line is not None:
            logger.log(logging.WARNING if self.report.failures or self.ignored else logging.INFO, line)


# ------------------------------------------------------------------ input


def _is_stream(input_file: str) -> bool:
    """Whether the input is read as it comes, as stdin is: `-`, a pipe (`<(cat f)`, `/dev/fd/N`),
    a FIFO, a terminal or a socket. A regular file is the other choice; anything else (a missing
    path, a folder) is an error naming it."""
    if input_file == "-":
        return True
    try:
        mode = os.stat(input_file).st_mode
    except FileNotFoundError as error:
        raise ConfigurationError(f"Input file not found: {input_file}") from error
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"Input file {input_file} cannot be opened: {error}") from error
    if stat.S_ISREG(mode):
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        return True
    kind = "a folder" if stat.S_ISDIR(mode) else "a block device"
    raise ConfigurationError(f"Input file {input_file} is {kind}, not a file or a pipe")


def _input_items(input_file: str, reader: Optional[DatasetReader]) -> Iterator[InputItem]:
    if reader is not None:
        if _is_stream(input_file):
            raise ConfigurationError(f"--use-dataset-reader needs a regular file, not {input_file} (stdin or a pipe)")
        for instance in reader.stream(input_file):
            yield InputItem(None, instance.metadata.get("source"), instance)
        return
    if input_file == "-":
        yield from _json_lines(sys.stdin.buffer)
        return
    with open(input_file, "rb") as handle:
        yield from _json_lines(handle)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity); quote it")


def _json_lines(handle: Iterable[bytes]) -> Iterator[InputItem]:
    """An item for every line, blank and broken ones included (their payload is the exception),
    so that output line n always answers input line n. Bytes are decoded line by line: a line that
    is not UTF-8 spoils only itself."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield InputItem(number, None, ValueError(
                f"line {number} is not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})"
            ))
            continue
        if not text.strip():
            yield InputItem(number, None, ValueError(f"line {number} is blank"))
            continue
        try:
            yield InputItem(number, None, json.loads(text, parse_constant=_refuse_constant))
        except json.JSONDecodeError as error:
            yield InputItem(number, None, ValueError(f"line {number} is not valid JSON: {error.msg}"))
        except (ValueError, RecursionError) as error:
            # Hostile JSON the decoder refuses: nesting deeper than the recursion limit, an
            # integer with more digits than Python converts, NaN or Infinity.
            yield InputItem(number, None, ValueError(f"line {number} is not usable JSON: {error}"))


def _chunks(items: Iterable[InputItem], size: int) -> Iterator[list[InputItem]]:
    chunk: list[InputItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ------------------------------------------------------------------ prediction


def _predict_batch(
    predictor: Predictor, items: list[InputItem], batch_size: Optional[int] = None,
    images: Optional[ImageCounts] = None,
) -> list[dict[str, Any]]:
    """Exactly one result per item, in order. The good items are predicted in batches of
    `batch_size` (default: all together) made of tweets of similar length; a bad item becomes its
    `failure` in its place. If the model fails on a batch, its items are retried one by one, so only
    the item that breaks the model fails. `images` counts what became of the items' images."""
    results: list[Optional[dict[str, Any]]] = [None] * len(items)
    instances: list[TaggingInstance] = []
    slots: list[int] = []
    for slot, item in enumerate(items):
        payload = item.payload
        if isinstance(payload, Exception):
            results[slot] = item.failure(str(payload))
            continue
        if isinstance(payload, TaggingInstance):
            instances.append(payload)
            slots.append(slot)
            continue
        try:
            instances.append(predictor.json_to_instance(payload))
            slots.append(slot)
        except Exception as error:  # noqa: BLE001 - any failure here belongs to this line only
            results[slot] = item.failure(_describe(error))
    if images is not None:
        for instance in instances:
            images.add(instance)
    # Batched as evaluation batches: by the model's lengths (word pieces), near-equal ones by words.
    sampler = BucketBatchSampler(batch_size=batch_size or max(len(instances), 1), shuffle=False)
    for chosen in sampler.batches(instances, lengths=predictor.model.sorting_lengths(instances)):
        batch = [instances[k] for k in chosen]
        try:
            predicted = _predict_checked(predictor, batch)
        except Exception as error:  # noqa: BLE001
            if len(batch) > 1:
                logger.warning("The model failed on a batch (%s); retrying its lines one by one", _describe(error))
            predicted = []
            for k, instance in zip(chosen, batch):
                try:
                    predicted.extend(_predict_checked(predictor, [instance]))
                except Exception as single_error:  # noqa: BLE001
                    message = f"the model failed on this input: {_describe(single_error)}"
                    predicted.append(items[slots[k]].failure(message))
        for k, result in zip(chosen, predicted):
            results[slots[k]] = result
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def _predict_checked(predictor: Predictor, instances: list[TaggingInstance]) -> list[dict[str, Any]]:
    predicted = predictor.predict_instances(instances)
    if len(predicted) != len(instances):
        raise RuntimeError(f"{type(predictor).__name__} returned {len(predicted)} results for {len(instances)} inputs")
    return predicted


def _describe(error: BaseException) -> str:
    """Errors raised on purpose (ValueError...) carry a message for the user; others get their type too."""
    if isinstance(error, (ValueError, TypeError, KeyError)) and str(error):
        return str(error)
    return f"{type(error).__name__}: {error}"


# ------------------------------------------------------------------ output


def _render(results: list[dict[str, Any]], first_line: int, folder: Path) -> int:
    """Pictures of the predictions that have an image; the file name starts with the output
    line number (so names are unique and sort in input order), then the input's `id` if any.
    Returns how many could not be drawn (each is logged with its line)."""
    failed = 0
    for line, result in enumerate(results, start=first_line):
        if "error" in result or not result.get("image"):
            continue
        name = f"{line:06d}"
        if "id" in result:
            name += "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", str(result["id"]))[:80]
        try:
            save_prediction_picture(result, folder / f"{name}.png")
        except Exception as error:  # noqa: BLE001 - a picture is a by-product; its line is written
            failed += 1
            logger.warning("line %d: no picture: %s", line, _describe(error))
    return failed


# Characters that end a line for some readers (Python's `str.splitlines`, JavaScript) though not
# for JSON: written as escapes, so every JSON-lines reader finds one line where we wrote one.
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def to_json_line(result: dict[str, Any], encoding: str = "utf-8") -> str:
    """`result` as one line of strict JSON, readable UTF-8 where possible. A lone surrogate (valid
    in a JSON escape, so it can arrive in input, but not encodable) or a character the target
    encoding lacks makes the line fall back to ASCII escapes: the same JSON value either way. A
    float that is not finite (JSON has no NaN) is written as a string ("NaN", "Infinity")."""
    try:
        text = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except ValueError:
        result = _finite(result)
        text = json.dumps(result, ensure_ascii=False, allow_nan=False)
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = json.dumps(result, ensure_ascii=True, allow_nan=False)
    return text.translate(_LINE_BREAKS)


def _finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by its name as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class PredictionWriter:
    """
    Writes result lines to `output_file` (if given) and echoes them to stdout (if `echo`),
    flushing after each window of lines so an interrupted run keeps every line written so far.

    # Parameters

    output_file : `str`, optional
        Opened (and truncated) on entry; a folder or unwritable path is a `ConfigurationError`.
    echo : `bool`, optional (default = `True`)
        Also print each line to stdout (`predict --silent` turns it off); stops quietly on a closed pipe.
    atomic : `bool`, optional (default = `False`)
        Write into a temporary file beside `output_file`, renamed to it once complete and removed on
        failure: a distributed run that loses a worker leaves no partial output (one process keeps
        the lines written so far instead, flushed window by window).
    """

    def __init__(self, output_file: Optional[str] = None, echo: bool = True, atomic: bool = False) -> None:
        self.output_file = output_file
        self.echo = echo
        self.atomic = atomic
        self._output: Optional[IO[str]] = None
        self._temp: Optional[str] = None
        self.lines_written = 0

    def __enter__(self) -> "PredictionWriter":
        if self.output_file:
            try:
                target = self.output_file
                if self.atomic:
                    folder, name = os.path.split(os.path.abspath(self.output_file))
                    handle, self._temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=TEMP_SUFFIX)
                    os.close(handle)
                    target = self._temp
                self._output = open(target, "w", encoding="utf-8", newline="\n")
            except OSError as error:
                raise ConfigurationError(f"Cannot write --output-file {self.output_file}: {error.strerror}") from error
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        temp, self._temp = self._temp, None
        try:
            if self._output is not None:
                output, self._output = self._output, None
                try:
                    output.close()
                except OSError as error:
                    if exc_type is None:  # else the first failure is the one to report
                        raise self._write_error(error) from error
            if temp is not None and exc_type is None:
                rename_into_place(temp, str(self.output_file))
        finally:
            if temp is not None and os.path.exists(temp):
                os.unlink(temp)

    def _write_error(self, error: OSError) -> OSError:
        return OSError(f"Cannot write --output-file {self.output_file}: {error.strerror or error}")

    def write(self, results: list[dict[str, Any]]) -> bool:
        """Write and flush one window of results; `False` once there is nowhere left to write. A
        failed write (a full disk, `/dev/full`) is an `OSError` naming the output."""
        if self._output is not None:
            try:
                self._output.write("".join(to_json_line(result) + "\n" for result in results))
                self._output.flush()
            except OSError as error:
                raise self._write_error(error) from error
        if self.echo:
            encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
            try:
                sys.stdout.write("".join(to_json_line(result, encoding) + "\n" for result in results))
                sys.stdout.flush()
            except BrokenPipeError:
                # `allennlp predict ... | head`: stop echoing; keep writing the output file if any.
                # stdout goes to /dev/null, so Python's own flush at exit does not complain again.
                self.echo = False
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                if self._output is None:
                    return False
            except OSError as error:
                raise OSError(f"Cannot write to stdout: {error.strerror or error}") from error
        self.lines_written += len(results)
        return True
