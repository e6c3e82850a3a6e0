"""
`allennlp print-results DIR...`: the metrics of many runs as one table, as AllenNLP's command had.
Runs (directories holding `metrics.json`, found anywhere under each DIR) are grouped by their
`config.json` with the seeds taken out, so one group is one config trained with several seeds; each
cell is the mean ± sample standard deviation over the group's runs.
"""
import argparse
import csv
import fnmatch
import hashlib
import io
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.subcommand import Subcommand
from fmit_plugin.models.archival import CONFIG_NAME

DEFAULT_KEYS = ("test_precision-overall", "test_recall-overall", "test_f1-measure-overall",
                "best_validation_f1-measure-overall")
# Config keys that only choose a seed: runs differing in these alone are one group.
SEED_KEYS = ("random_seed", "numpy_seed", "pytorch_seed")


@Subcommand.register("print-results")
class PrintResults(Subcommand):
    """Registered as a `Subcommand` with name "print-results"."""

    def add_subparser(self, parser: argparse._SubParsersAction) -> argparse.ArgumentParser:
        subparser = parser.add_parser(
            self.name, help="Print a table of the metrics of many runs, mean ± std over seeds.",
            description="Walk serialization directories, group the runs by config (seeds aside) and print "
                        "the mean ± sample standard deviation of chosen metrics per group.",
        )
        subparser.add_argument("directories", nargs="+", help="serialization directories, or folders holding them")
        subparser.add_argument("-k", "--keys", nargs="+", default=list(DEFAULT_KEYS),
                               help="metric keys, shell patterns allowed (e.g. 'test_f1-measure-*'); "
                                    f"default: {' '.join(DEFAULT_KEYS)}")
        subparser.add_argument("-m", "--metrics-filename", default="metrics.json",
                               help="the metrics file of each run (default metrics.json)")
        subparser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
        subparser.set_defaults(func=print_results_from_args)
        return subparser


def print_results_from_args(args: argparse.Namespace) -> None:
    print(results_table(args.directories, args.keys, args.metrics_filename, args.format), end="")


@dataclass
class RunGroup:
    """Runs of one config (seeds aside): their directories, seeds and metrics."""

    label: str
    directories: list[Path] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def find_runs(directories: list[str], metrics_filename: str = "metrics.json") -> list[RunGroup]:
    """Every run under `directories`, grouped by config with the seeds taken out, in path order."""
    groups: dict[str, RunGroup] = {}
    for directory in directories:
        if not Path(directory).is_dir():
            raise ConfigurationError(f"print-results: {directory} is not a directory")
    found = sorted({path.resolve() for d in directories for path in Path(d).rglob(metrics_filename)})
    if not found:
        raise ConfigurationError(f"print-results: no {metrics_filename} under {', '.join(directories)}")
    for metrics_file in found:
        run = metrics_file.parent
        metrics = _read_json(metrics_file)
        config_file = run / CONFIG_NAME
        config: dict[str, Any] = _read_json(config_file) if config_file.is_file() else {"(no config)": str(run)}
        trainer = config.get("trainer")
        seed = trainer.get("seed") if isinstance(trainer, dict) else None
        key = json.dumps(_without_seeds(config), sort_keys=True)
        group = groups.setdefault(key, RunGroup(label=""))
        group.directories.append(run)
        group.seeds.append(seed)
        group.metrics.append(metrics)
    for group in groups.values():
        group.label = _label(group.directories)
    return list(groups.values())


def results_table(directories: list[str], keys: list[str], metrics_filename: str = "metrics.json",
                  output_format: str = "markdown") -> str:
    """The table `print-results` prints: one row per group, mean ± std of each key in `keys`."""
    groups = find_runs(directories, metrics_filename)
    numeric = sorted({k for g in groups for m in g.metrics for k, v in m.items() if _is_number(v)})
    columns = [k for pattern in keys for k in (fnmatch.filter(numeric, pattern) or [pattern])]
    columns = list(dict.fromkeys(columns))
    rows = []
    for group in groups:
        cells = []
        for column in columns:
            values = [m[column] for m in group.metrics if _is_number(m.get(column))]
            mean = statistics.mean(values) if values else None
            std = statistics.stdev(values) if len(values) > 1 else None
            cells.append((mean, std, len(values)))
        rows.append((group, cells))
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["config", "runs", "seeds", *(f"{c}{s}" for c in columns for s in ("_mean", "_std", "_n"))])
        for group, cells in rows:
            writer.writerow([group.label, len(group.directories), " ".join(map(str, group.seeds)),
                             *(_csv(v) for cell in cells for v in cell)])
        return buffer.getvalue()
    lines = ["| config | runs | seeds | " + " | ".join(columns) + " |", "|" + "---|" * (3 + len(columns))]
    for group, cells in rows:
        lines.append(f"| {group.label} | {len(group.directories)} | {', '.join(map(str, group.seeds))} | "
                     + " | ".join(_markdown(mean, std, n, len(group.directories)) for mean, std, n in cells) + " |")
    return "\n".join(lines) + "\n\nmean ± sample standard deviation (n - 1) over each group's runs\n"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"print-results: cannot read {path}: {error}") from error
    if not isinstance(value, dict):
        raise ConfigurationError(f"print-results: {path} holds a {type(value).__name__}, not a JSON object")
    return value


def _without_seeds(config: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in config.items() if k not in SEED_KEYS}
    if isinstance(config.get("trainer"), dict):
        config["trainer"] = {k: v for k, v in config["trainer"].items() if k != "seed"}
    return config


def _label(directories: list[Path]) -> str:
    """A group's name: its one directory, or what its directories' paths share (`runs/crf_seed1`,
    `runs/crf_seed2` -> `runs/crf_seed*`), with a short hash so that two groups never share a name."""
    paths = [os.path.relpath(d) if not os.path.relpath(d).startswith("..") else str(d) for d in directories]
    if len(paths) == 1:
        return paths[0]
    prefix = os.path.commonprefix(paths)
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:6]
    return f"{prefix}* [{digest}]"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _markdown(mean: Optional[float], std: Optional[float], n: int, runs: int) -> str:
    if mean is None:
        return "-"
    text = f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"
    return text if n == runs else f"{text} (n = {n})"


def _csv(value: Optional[float]) -> str:
    return "" if value is None else repr(value)
