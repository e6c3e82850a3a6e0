"""The `Subcommand` registry: plugins add `allennlp <name>` subcommands by registering one."""
import argparse

from tango.common import Registrable


class Subcommand(Registrable):
    """
    An `allennlp` subcommand. `add_subparser` adds its parser and sets `func` to what runs it.
    Register a subclass (`@Subcommand.register("my-command")`) in a plugin to add a command.
    """

    requires_plugins: bool = True

    @property
    def name(self) -> str:
        for name, (cls, _) in Registrable._registry[Subcommand].items():
            if cls is type(self):
                return name
        raise NotImplementedError(f"{type(self).__name__} is not registered")

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        raise NotImplementedError
