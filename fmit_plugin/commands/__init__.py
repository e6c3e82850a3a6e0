"""The `allennlp` command: AllenNLP's train / evaluate / predict, plus subcommands plugins register."""
import argparse
import logging
import os
import re
import sys
from typing import Optional

from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.common import distributed
from fmit_plugin.common.plugins import import_plugins

logger = logging.getLogger(__name__)


def _included_packages(argv: list[str]) -> list[str]:
    """`--include-package` values, read before the real parse because plugins may add subcommands."""
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--include-package", action="append", default=[])
    known, _ = pre_parser.parse_known_args(argv)
    return known.include_package


def create_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Run AllenNLP-style commands with the fmit-plugin.",
    )
    subparsers = parser.add_subparsers(title="Commands", metavar="")
    for name in sorted(Subcommand.list_available()):
        subparser = Subcommand.by_name(name)().add_subparser(subparsers)
        subparser.add_argument("--include-package", action="append", default=[],
                               help="additional packages to import (plugins)")
    return parser


def main(prog: Optional[str] = None, argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        level=getattr(logging, os.environ.get("FMIT_LOG_LEVEL", "INFO").upper(), logging.INFO),
    )
    for noisy in ("transformers", "huggingface_hub", "filelock", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import transformers

    # transformers' own "Loading weights" bars would interleave with ours.
    transformers.logging.disable_progress_bar()
    try:
        import_plugins(_included_packages(argv))
        parser = create_parser(prog)
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            parser.print_help()
            sys.exit(1)
        if getattr(args, "file_friendly_logging", False):
            os.environ["FMIT_FILE_FRIENDLY_LOGGING"] = "1"
        args.func(args)
    except (ConfigurationError, OSError, ValueError) as error:
        # Configuration and data problems are the user's to fix: one clear line, no traceback.
        # OSError covers unreadable / unwritable paths (its message names the path).
        # FMIT_DEBUG=1 shows the traceback.
        if os.environ.get("FMIT_DEBUG") == "1":
            raise
        # Under torchrun every worker prints its own: the line says whose it is.
        worker = f"{distributed.describe_worker()}: " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"error: {worker}{type(error).__name__}: {one_line(str(error))}", file=sys.stderr)
        sys.exit(2)
    except distributed.WorkerLost as error:
        # Not this worker's fault: one line naming it, torchrun's report names the one that failed.
        if os.environ.get("FMIT_DEBUG") == "1":
            raise
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        sys.exit(1)


def one_line(message: str) -> str:
    """Messages from libraries (transformers, jsonnet) span lines; the CLI promises one."""
    return re.sub(r"\s*\n\s*", " ", message.strip())
