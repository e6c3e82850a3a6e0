"""`allennlp model-card ARCHIVE`: the archive's provenance (data, config as run, packages, device) in Markdown."""
import argparse
from pathlib import Path

from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.common.file_utils import atomic_write
from fmit_plugin.models.archival import read_archive_meta
from fmit_plugin.models.model_card import render_model_card


@Subcommand.register("model-card")
class ModelCard(Subcommand):
    """Registered as a `Subcommand` with name "model-card"."""

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        subparser = parser.add_parser(
            self.name, help="Print a model's card: its data, config as run, packages and device.",
            description="Print the model card of an archive (or a serialization directory) in Markdown: "
                        "each data file's SHA-256, counts and known version, the config as run, the "
                        "package versions and the device it was trained on.",
        )
        subparser.add_argument("archive_file", help="model.tar.gz (or a serialization directory)")
        subparser.add_argument("--output-file", help="also write the card here")
        subparser.set_defaults(func=model_card_from_args)
        return subparser


def model_card_from_args(args: argparse.Namespace) -> None:
    card = render_model_card(read_archive_meta(args.archive_file), str(args.archive_file))
    print(card, end="")
    if args.output_file:
        atomic_write(args.output_file, lambda temp: Path(temp).write_text(card, encoding="utf-8"))
