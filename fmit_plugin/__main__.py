"""`python -m fmit_plugin` and the `allennlp` console script."""
from fmit_plugin.commands import main


def run() -> None:
    main(prog="allennlp")


if __name__ == "__main__":
    run()
