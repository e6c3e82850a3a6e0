"""
Published tables from benchmark results: each benchmark renders its results as a markdown table and
calls `publish(name, markdown)`, which writes `benchmarks/results/<name>.md` and replaces the text
between `<!-- table:<name> -->` and `<!-- /table:<name> -->` in the table's page (`PAGES`: the README
for the headline and demo tables, a page under `docs/` for the others). Tables are never typed by
hand, so the README and the docs only ever show numbers a results file holds.

    python benchmarks/readme_tables.py          # re-render every table from benchmarks/results/*.json
    python benchmarks/readme_tables.py --check  # write nothing; exit 1 if a page differs from its results

Re-rendering runs no benchmark: it calls each benchmark's own table function on its results file.
"""
import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

from fmit_plugin.common.file_utils import atomic_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# Table name -> the page that shows it. `accuracy_<dataset>` tables not listed go to docs/results.md.
PAGES = {
    "demo": README,
    "headline_accuracy": README,
    "headline_speed": README,
    "accuracy_twitter2015": DOCS / "results.md",
    "paper_tables": DOCS / "results.md",
    "synthetic": DOCS / "results.md",
    "gmner": DOCS / "results.md",
    "speed": DOCS / "speed.md",
    "speed_long": DOCS / "speed.md",
    "visual_extraction": DOCS / "visual_objects.md",
    "distributed": DOCS / "training.md",
    "serve": DOCS / "serving.md",
}


def page(name: str) -> Path:
    """The page that shows the table `name`."""
    if name in PAGES:
        return PAGES[name]
    if name.startswith("accuracy_"):
        return DOCS / "results.md"
    raise KeyError(f"no page for the table {name!r}: add it to PAGES in benchmarks/readme_tables.py")


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


def _pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def replace_section(text: str, name: str, markdown: str, where: str = "README.md") -> str:
    """`text` with the body between the two markers of `name` replaced; a missing marker is an error."""
    pattern = _pattern(name)
    if not pattern.search(text):
        raise KeyError(f"{where} has no '<!-- table:{name} -->' ... '<!-- /table:{name} -->' markers")
    return pattern.sub(lambda match: match.group(1) + markdown.rstrip("\n") + "\n" + match.group(3), text)


def section(text: str, name: str) -> str | None:
    """The body between the two markers of `name` in `text`, or None without them."""
    match = _pattern(name).search(text)
    return None if match is None else match.group(2)


def publish(name: str, markdown: str, target: Path | None = None) -> None:
    """Writes `benchmarks/results/<name>.md` and puts the same table into its page (default `page(name)`)."""
    target = page(name) if target is None else Path(target)
    RESULTS.mkdir(parents=True, exist_ok=True)
    _atomic_write(RESULTS / f"{name}.md", markdown.rstrip("\n") + "\n")
    where = str(target.relative_to(ROOT)) if target.is_relative_to(ROOT) else str(target)
    _atomic_write(target, replace_section(target.read_text(encoding="utf-8"), name, markdown, where))


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def renderers() -> dict[str, Callable[[], str]]:
    """Every published table, by name, rendered by its benchmark's own function from its results file."""
    sys.path.insert(0, str(Path(__file__).parent))
    import accuracy
    import distributed
    import fresh_clone
    import gmner
    import paper_tables
    import serve
    import speed
    import synthetic
    import visual_extraction

    tables: dict[str, Callable[[], str]] = {}
    for dataset in accuracy.datasets(RESULTS):
        tables[f"accuracy_{dataset}"] = lambda dataset=dataset: accuracy.table(dataset, RESULTS)
    tables["paper_tables"] = lambda: paper_tables.render(RESULTS / "paper_tables")
    tables["synthetic"] = lambda: synthetic.table(_load("synthetic.json"))
    tables["headline_accuracy"] = lambda: accuracy.headline(RESULTS)
    tables["visual_extraction"] = lambda: visual_extraction.table(_load("visual_extraction.json"))
    tables["speed"] = lambda: speed.render(_load("speed.json"))
    tables["headline_speed"] = lambda: speed.headline(_load("speed.json"))
    if (RESULTS / "speed_long.json").is_file():
        tables["speed_long"] = lambda: speed.render_long(_load("speed_long.json"))
    tables["demo"] = lambda: fresh_clone.table(_load("demo.json"))
    if (RESULTS / "distributed.json").is_file():
        tables["distributed"] = lambda: distributed.table(_load("distributed.json"))
    tables["serve"] = lambda: serve.table(_load("serve.json"))
    if (RESULTS / "gmner.json").is_file():
        tables["gmner"] = lambda: gmner.table(_load("gmner.json"))
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a page or results/<name>.md differs from its results file")
    args = parser.parse_args()
    stale = []
    for name, render in renderers().items():
        markdown = render().rstrip("\n") + "\n"
        target = page(name)
        if args.check:
            shown = section(target.read_text(encoding="utf-8"), name)
            copy = RESULTS / f"{name}.md"
            if shown != markdown:
                stale.append(f"{target.relative_to(ROOT)}: table {name}")
            if not copy.is_file() or copy.read_text(encoding="utf-8") != markdown:
                stale.append(f"{copy.relative_to(ROOT)}")
        else:
            publish(name, markdown)
            print(f"{name} -> {target.relative_to(ROOT)}")
    if stale:
        sys.exit("not as their results files render them:\n  " + "\n  ".join(stale))
    if args.check:
        print("every published table is as its results file renders it")


if __name__ == "__main__":
    main()
