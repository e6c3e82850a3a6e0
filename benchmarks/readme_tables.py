"""
README tables from benchmark results: each benchmark renders its results as a markdown table and
calls `publish(name, markdown)`, which writes `benchmarks/results/<name>.md` and replaces the README
text between `<!-- table:<name> -->` and `<!-- /table:<name> -->`. Tables are never typed by hand, so
the README only ever shows numbers a results file holds.
"""
import re
from pathlib import Path

from fmit_plugin.common.file_utils import atomic_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


def replace_section(text: str, name: str, markdown: str) -> str:
    """`text` with the body between the two markers of `name` replaced; a missing marker is an error."""
    pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise KeyError(f"README.md has no '<!-- table:{name} -->' ... '<!-- /table:{name} -->' markers")
    return pattern.sub(lambda match: match.group(1) + markdown.rstrip("\n") + "\n" + match.group(2), text)


def publish(name: str, markdown: str, readme: Path = README) -> None:
    """Writes `benchmarks/results/<name>.md` and puts the same table into the README."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    _atomic_write(RESULTS / f"{name}.md", markdown.rstrip("\n") + "\n")
    _atomic_write(readme, replace_section(readme.read_text(encoding="utf-8"), name, markdown))


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
