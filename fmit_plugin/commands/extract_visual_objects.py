"""`allennlp extract-visual-objects CONFIG`: fill the feature store for a config's data files once."""
import argparse
import logging

from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.common.params import load_config
from fmit_plugin.data.dataset_reader import DatasetReader

logger = logging.getLogger(__name__)

DATA_KEYS = {"train": "train_data_path", "validation": "validation_data_path", "test": "test_data_path"}


@Subcommand.register("extract-visual-objects")
class ExtractVisualObjects(Subcommand):
    """Registered as a `Subcommand` with name "extract-visual-objects"."""

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        subparser = parser.add_parser(
            self.name,
            description="Ground phrases, encode regions and cache the visual objects of a config's data files, "
            "so that training reads the store only.",
            help="Precompute visual objects.",
        )
        subparser.add_argument("config", help="a training config whose dataset_reader has visual_objects")
        subparser.add_argument("-o", "--overrides", default="", help="JSON overrides of the config")
        subparser.add_argument("--splits", nargs="+", choices=sorted(DATA_KEYS), default=sorted(DATA_KEYS),
                               help="which of the config's data files to process")
        subparser.add_argument("--file-friendly-logging", action="store_true")
        subparser.set_defaults(func=extract_from_args)
        return subparser


def extract_from_args(args: argparse.Namespace) -> None:
    extract_visual_objects(args.config, args.overrides, args.splits)


def extract_visual_objects(config_file: str, overrides: str = "", splits: tuple[str, ...] = tuple(DATA_KEYS)) -> None:
    params = load_config(config_file, overrides)
    readers = {"train": params.get("dataset_reader")}
    validation_reader = params.get("validation_dataset_reader", None)
    readers["validation"] = readers["test"] = validation_reader or readers["train"]
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
        reader.read(path)  # the reader extracts and stores what the store does not hold yet
        summary = getattr(reader, "last_visual_summary", None)
        print(f"{split} ({path}): {summary.line() if summary else 'no tweets'}")
        done += 1
    if not done:
        raise ConfigurationError(f"{config_file} names none of the data files {[DATA_KEYS[s] for s in splits]}")
