"""`allennlp train CONFIG -s DIR`: read data, build vocabulary, model and trainer, train, archive."""
import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Union

from tango.common import Params
from tango.common.exceptions import ConfigurationError
from tango.integrations.torch import Optimizer

from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.common import distributed
from fmit_plugin.common.config_files import check_regular_file
from fmit_plugin.common.directory_lock import DirectoryLock
from fmit_plugin.common.file_utils import atomic_write, dump_metrics
from fmit_plugin.common.params import check_config_types, load_config
from fmit_plugin.common.seeds import set_seed
from fmit_plugin.data.data_loader import DataLoader
from fmit_plugin.data.dataset_fingerprint import DatasetFingerprint, fingerprint_dataset
from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.archival import CONFIG_NAME, TRAINING_RECORD_NAME, VOCABULARY_DIR, archive_model
from fmit_plugin.models.model import Model
from fmit_plugin.models.model_card import training_record
from fmit_plugin.training.evaluation import description_of, evaluate
from fmit_plugin.training.logs import training_logs
from fmit_plugin.training.trainer import Trainer

logger = logging.getLogger(__name__)


@Subcommand.register("train")
class Train(Subcommand):
    """Registered as a `Subcommand` with name "train"."""

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        subparser = parser.add_parser(self.name, description="Train a model.", help="Train a model.")
        subparser.add_argument("param_path", help="the jsonnet / json config")
        subparser.add_argument("-s", "--serialization-dir", required=True,
                               help="directory for the model, logs and metrics")
        subparser.add_argument("-o", "--overrides", default="",
                               help='JSON overrides, e.g. \'{"trainer.num_epochs": 1}\'')
        group = subparser.add_mutually_exclusive_group()
        group.add_argument("-r", "--recover", action="store_true",
                           help="resume from the serialization directory's last checkpoint")
        group.add_argument("-f", "--force", action="store_true",
                           help="delete the serialization directory if it exists")
        subparser.add_argument("--dry-run", action="store_true",
                               help="read the data, build vocabulary and model, then stop")
        subparser.add_argument("--file-friendly-logging", action="store_true",
                               help="rare ASCII progress updates, for log files")
        subparser.set_defaults(func=train_from_args)
        return subparser


def train_from_args(args: argparse.Namespace) -> None:
    train_model_from_file(args.param_path, args.serialization_dir, args.overrides,
                          recover=args.recover, force=args.force, dry_run=args.dry_run,
                          file_friendly_logging=args.file_friendly_logging)


def train_model_from_file(
    parameter_filename: Union[str, Path],
    serialization_dir: Union[str, Path],
    overrides: Union[str, dict[str, Any]] = "",
    recover: bool = False,
    force: bool = False,
    dry_run: bool = False,
    file_friendly_logging: bool = False,
) -> Optional[Model]:
    return train_model(load_config(parameter_filename, overrides), serialization_dir,
                       recover=recover, force=force, dry_run=dry_run,
                       file_friendly_logging=file_friendly_logging)


def _refuse_distributed_block(params: Params) -> None:
    """AllenNLP spawns workers itself from a `"distributed"` block; here PyTorch's launcher does."""
    if "distributed" in params:
        raise ConfigurationError(
            'The "distributed" config block is not supported: launch the workers with PyTorch\'s '
            "torchrun instead, e.g. `torchrun --nproc_per_node 2 -m fmit_plugin train CONFIG -s DIR` "
            "(add --nnodes / --node_rank / --rdzv_endpoint for several machines), and remove the block."
        )


# The blocks a training config builds, by key: their values are checked against the constructors'
# annotations before anything is read or written.
_TOP_LEVEL_BLOCKS = {"dataset_reader": DatasetReader, "validation_dataset_reader": DatasetReader,
                     "vocabulary": Vocabulary, "model": Model, "data_loader": DataLoader,
                     "validation_data_loader": DataLoader, "trainer": Trainer}


def _check_config(params: Params) -> None:
    """Typed values and the epoch count, before the serialization directory is touched."""
    for key, cls in _TOP_LEVEL_BLOCKS.items():
        check_config_types(cls, params.get(key, None), key)
    trainer = params.get("trainer", None)
    if trainer is not None:
        # Trainer takes the optimizer as a plain dict (for parameter_groups): check it as the Optimizer it builds.
        check_config_types(Optimizer, trainer.get("optimizer", None), "trainer.optimizer", skip=("parameter_groups",))
        epochs = trainer.get("num_epochs", 1)
        if epochs < 1:
            raise ConfigurationError(f"trainer.num_epochs must be at least 1, got {epochs}")


def _prepare_serialization_dir(
    serialization_dir: Path, params: Params, recover: bool, force: bool
) -> None:
    if force and serialization_dir.exists():
        shutil.rmtree(serialization_dir)
    if recover:
        saved = serialization_dir / CONFIG_NAME
        if not saved.is_file():
            raise ConfigurationError(f"--recover given, but {saved} does not exist: nothing to resume")
        if json.loads(saved.read_text(encoding="utf-8")) != params.as_dict(quiet=True):
            raise ConfigurationError(
                f"--recover: the config differs from the one saved in {saved}; "
                "use the same config and overrides, or --force to start afresh"
            )
        return
    if serialization_dir.exists() and any(serialization_dir.iterdir()):
        raise ConfigurationError(
            f"Serialization directory {serialization_dir} already exists and is not empty. "
            "Use --recover to resume or --force to overwrite."
        )
    serialization_dir.mkdir(parents=True, exist_ok=True)
    params.to_file(str(serialization_dir / CONFIG_NAME))


def _validation_loader_params(params: Params) -> Params:
    """Validation batches come from `validation_data_loader`, else `data_loader` unshuffled."""
    explicit = params.pop("validation_data_loader", None)
    if explicit is not None:
        return explicit
    loader = params.get("data_loader").duplicate()
    sampler = loader.get("batch_sampler", None)
    if sampler is not None:
        sampler["shuffle"] = False
    else:
        loader["shuffle"] = False
    return loader


def _read(reader: DatasetReader, path: Optional[str], key: str) -> Optional[list[TaggingInstance]]:
    if path is None:
        return None
    if not Path(path).exists():
        raise ConfigurationError(f"{key}: data file not found: {path}")
    # Data files are streamed line by line, so only their kind is checked (a FIFO would block, a device never end).
    check_regular_file(path, f"{key}: data file", max_bytes=sys.maxsize)
    return reader.read(path)


def train_model(
    params: Params,
    serialization_dir: Union[str, Path],
    recover: bool = False,
    force: bool = False,
    dry_run: bool = False,
    file_friendly_logging: bool = False,
) -> Optional[Model]:
    """Train as configured; returns the model with its best weights (`None` on a dry run).
    Started by `torchrun`, it joins the process group (NCCL on GPUs, gloo on CPUs), trains with
    DistributedDataParallel, and leaves the group at the end. `file_friendly_logging` makes progress
    bars print a line every 10 seconds (for log files)."""
    serialization_dir = Path(serialization_dir)
    _refuse_distributed_block(params)
    _check_config(params)
    if file_friendly_logging:
        os.environ["FMIT_FILE_FRIENDLY_LOGGING"] = "1"
    joined = distributed.init_from_environment()
    # One run per directory, for the whole run (rank 0 holds the lock for all workers); taken before
    # -f deletes anything, so neither a second run nor a -f can pull the directory from under a live one.
    lock = DirectoryLock(serialization_dir, "train") if distributed.is_primary() else contextlib.nullcontext()
    with lock:
        if distributed.is_primary():
            _prepare_serialization_dir(serialization_dir, params, recover, force)
        distributed.barrier()
        with training_logs(serialization_dir):
            model = _train(params, serialization_dir, recover, dry_run)
    if joined:
        distributed.destroy()
    return model


def _fingerprint(path: Optional[str], instances: Optional[list[TaggingInstance]]) -> Optional[DatasetFingerprint]:
    """A configured file's fingerprint, counted on its instances when it was read (hash only when not)."""
    return fingerprint_dataset(path, instances) if path is not None and Path(path).is_file() else None


def _write_training_record(serialization_dir: Path, record: dict[str, Any]) -> None:
    if distributed.is_primary():
        text = json.dumps(record, indent=2)
        atomic_write(serialization_dir / TRAINING_RECORD_NAME, lambda temp: Path(temp).write_text(text, "utf-8"))


def _train(params: Params, serialization_dir: Path, recover: bool, dry_run: bool) -> Optional[Model]:
    config_as_run = params.duplicate().as_dict(quiet=True)  # as_dict is a view: popping would empty it
    set_seed(int(params.get("trainer", Params({})).get("seed", 13370)))

    reader = DatasetReader.from_params(params.pop("dataset_reader"))
    validation_reader_params = params.pop("validation_dataset_reader", None)
    validation_reader = (
        DatasetReader.from_params(validation_reader_params) if validation_reader_params is not None else reader
    )
    train_path = params.pop("train_data_path")
    train_data = _read(reader, train_path, "train_data_path")
    assert train_data is not None
    validation_path = params.pop("validation_data_path", None)
    validation_data = _read(validation_reader, validation_path, "validation_data_path")
    test_path = params.pop("test_data_path", None)
    evaluate_on_test = params.pop_bool("evaluate_on_test", False)
    test_data = _read(validation_reader, test_path, "test_data_path") if evaluate_on_test else None

    vocabulary_dir = serialization_dir / VOCABULARY_DIR
    vocabulary_params = params.pop("vocabulary", None)
    if recover and vocabulary_dir.is_dir():
        vocab = Vocabulary.from_files(vocabulary_dir)
    elif vocabulary_params is not None:
        vocab = Vocabulary.from_params(vocabulary_params)
    else:
        vocab = Vocabulary.from_instances([*train_data, *(validation_data or [])])
    if distributed.is_primary():
        vocab.save_to_files(vocabulary_dir)
    # A type the vocabulary lacks would otherwise fail in the middle of training, or after it for
    # the test data: fail now, naming file, line and label.
    hint = ("the label vocabulary comes from train_data_path and validation_data_path, so a type only "
            "in test_data_path can be neither learnt nor scored" if vocabulary_params is None and not recover
            else "the configured or recovered vocabulary lacks it")
    for instances in (train_data, validation_data, test_data):
        vocab.check_labels(instances or [], hint=hint)

    model = Model.from_params(params.pop("model"), vocab=vocab)
    validation_loader_params = _validation_loader_params(params)
    data_loader = DataLoader.from_params(params.pop("data_loader"), instances=train_data)
    data_loader.index_with(vocab)
    data_loader.set_sorting_lengths(model.sorting_lengths(train_data))

    def evaluation_loader(instances: list[TaggingInstance]) -> DataLoader:
        loader = DataLoader.from_params(validation_loader_params.duplicate(), instances=instances)
        loader.index_with(vocab)
        loader.set_sorting_lengths(model.sorting_lengths(instances))
        return loader

    validation_loader = evaluation_loader(validation_data) if validation_data is not None else None
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("Model: %d parameters (%d trainable); labels: %s", parameters, trainable,
                ", ".join(vocab.get_token_to_index_vocabulary("labels")))
    if dry_run:
        # The trainer is built too (optimizer, parameter groups, scheduler: a misspelt key there is
        # caught), on the CPU: the device itself is checked when training starts.
        trainer_params = params.pop("trainer")
        trainer_params["cuda_device"] = -1
        Trainer.from_params(
            trainer_params, model=model, serialization_dir=serialization_dir,
            data_loader=data_loader, validation_data_loader=validation_loader,
        )
        params.assert_empty("train --dry-run")
        print(f"Dry run: {len(train_data)} training, {len(validation_data or [])} validation, "
              f"{len(test_data or [])} test instances; {vocab}; {parameters:,} parameters "
              f"({trainable:,} trainable). Config is valid.")
        return None

    trainer = Trainer.from_params(
        params.pop("trainer"), model=model, serialization_dir=serialization_dir,
        data_loader=data_loader, validation_data_loader=validation_loader,
    )
    params.assert_empty("train")
    record = training_record(config_as_run, {
        "train": _fingerprint(train_path, train_data),
        "validation": _fingerprint(validation_path, validation_data),
        "test": _fingerprint(test_path, test_data),
    }, trainer.device)
    _write_training_record(serialization_dir, record)
    if recover:
        trainer.restore_checkpoint()
    metrics = trainer.train()
    record["best_epoch"] = metrics.get("best_epoch")
    record["best_validation"] = {k[len("best_validation_"):]: v for k, v in metrics.items()
                                 if k.startswith("best_validation_")}
    _write_training_record(serialization_dir, record)
    metrics["training_record"] = record
    if distributed.is_primary():
        archive_model(serialization_dir)
    if test_data is not None:
        test_loader = evaluation_loader(test_data)
        test_metrics = evaluate(model, test_loader, trainer.device, "test", len(test_loader))
        metrics.update({f"test_{k}": v for k, v in test_metrics.items()})
    if distributed.is_primary():
        dump_metrics(serialization_dir / "metrics.json", metrics)
        # The figures of metrics.json, not a progress bar's running ones.
        for prefix, what in (("best_validation_", "best validation"), ("test_", "test")):
            final = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
            if final:
                logger.info("Final %s metrics (as in metrics.json): %s", what, description_of(final))
        logger.info("Finished: archive at %s", serialization_dir / "model.tar.gz")
    distributed.barrier()
    return model
