"""`allennlp extract-visual-objects CONFIG`: fill the feature store for a config's data files once.

Under `torchrun` each worker extracts every `world_size`-th tweet on its own device, and all the
workers of a machine write into the one store file: SQLite's own locking serialises their small
write transactions (WAL mode, a 60 s busy timeout), so the store is the one a single process fills,
entry by entry. A rerun computes only the entries the store lacks. Machines that do not share the
store's disk each fill their own, merged afterwards with `--merge`.
"""
import argparse
import logging
from pathlib import Path
from typing import Optional

from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.common import distributed
from fmit_plugin.common.params import load_config
from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.vision.feature_store import FeatureStore
from fmit_plugin.vision.visual_object_extractor import ExtractionSummary

logger = logging.getLogger(__name__)

DATA_KEYS = {"train": "train_data_path", "validation": "validation_data_path", "test": "test_data_path"}


@Subcommand.register("extract-visual-objects")
class ExtractVisualObjects(Subcommand):
    """Registered as a `Subcommand` with name "extract-visual-objects"."""

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        subparser = parser.add_parser(
            self.name,
            description="Ground phrases, encode regions and cache the visual objects of a config's data files, "
            "so that training reads the store only. Under torchrun the tweets are shared among the workers.",
            help="Precompute visual objects.",
        )
        subparser.add_argument("config", help="a training config whose dataset_reader has visual_objects")
        subparser.add_argument("-o", "--overrides", default="", help="JSON overrides of the config")
        subparser.add_argument("--splits", nargs="+", choices=sorted(DATA_KEYS), default=sorted(DATA_KEYS),
                               help="which of the config's data files to process")
        subparser.add_argument("--merge", nargs="+", metavar="STORE",
                               help="instead of extracting, add the entries of these stores (filled on other "
                                    "machines) to the config's store")
        subparser.add_argument("--file-friendly-logging", action="store_true")
        subparser.set_defaults(func=extract_from_args)
        return subparser


def extract_from_args(args: argparse.Namespace) -> None:
    if args.merge:
        merge_stores(args.config, args.merge, args.overrides)
    else:
        extract_visual_objects(args.config, args.overrides, args.splits)


def _readers(params: Params) -> dict[str, Params]:
    train = params.get("dataset_reader")
    validation = params.get("validation_dataset_reader", None) or train
    return {"train": train, "validation": validation, "test": validation}


def extract_visual_objects(config_file: str, overrides: str = "", splits: tuple[str, ...] = tuple(DATA_KEYS)) -> None:
    params = load_config(config_file, overrides)
    readers = _readers(params)
    joined = distributed.init_from_environment()
    try:
        done = 0
        for split in splits:
            path = params.get(DATA_KEYS[split], None)
            if path is None:
                continue
            reader = DatasetReader.from_params(readers[split].duplicate())
            if getattr(reader, "visual_objects", None) is None:
                raise ConfigurationError(
                    f"The {split} dataset reader of {config_file} has no visual_objects: nothing to extract"
                )
            summary = _extract(reader, path)
            if distributed.is_primary():
                print(f"{split} ({path}): {summary.line() if summary else 'no tweets'}")
            done += 1
        if not done:
            raise ConfigurationError(f"{config_file} names none of the data files {[DATA_KEYS[s] for s in splits]}")
    finally:
        if joined:
            distributed.destroy()


def _extract(reader: DatasetReader, path: str) -> Optional[ExtractionSummary]:
    """Extracts and stores what the store lacks for `path`; on the primary worker, what all workers did."""
    if not distributed.is_distributed() or not isinstance(reader, TwitterMnerReader):
        reader.read(path)  # the reader extracts and stores what the store does not hold yet
        return getattr(reader, "last_visual_summary", None)
    assert reader.visual_objects is not None
    backbone = reader.visual_objects.backbone
    backbone.to(distributed.local_device())
    with reader.visual_objects_deferred():
        instances = reader.read(path)
    mine = [instances[index] for index in distributed.share(len(instances))]
    summary = reader.attach_visual_objects(
        mine, f"visual objects {Path(path).name} ({distributed.describe_worker()})", show_progress=True
    )
    gathered = distributed.gather_to_primary(summary, "summing extraction counts")
    if gathered is None:
        return None
    for other in gathered[1:]:
        summary.update(other)
    return summary


def merge_stores(config_file: str, sources: list[str], overrides: str = "") -> None:
    """Adds the entries of the `sources` stores to the store of each of the config's readers."""
    params = load_config(config_file, overrides)
    targets = []
    for reader in _readers(params).values():
        visual = reader.get("visual_objects", None)
        store_path = visual.get("store_path", None) if visual is not None else None
        if store_path is not None and store_path not in targets:
            targets.append(store_path)
    if not targets:
        raise ConfigurationError(f"No dataset reader of {config_file} has visual_objects.store_path: nowhere to merge")
    for target in targets:
        store = FeatureStore(target)
        try:
            for source in sources:
                if Path(source).resolve() == Path(target).resolve():
                    raise ConfigurationError(f"--merge {source} is the config's own store")
                added = store.merge_from(source)
                print(f"{target}: {added} entries added from {source}")
            print(f"{target}: {len(store)} entries")
        finally:
            store.close()
