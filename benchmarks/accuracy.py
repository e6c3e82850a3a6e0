"""
Accuracy benchmark: train a config on a Twitter MNER folder, evaluate on its test split, and
write overall / per-type P/R/F1, epochs and seconds per epoch (with the machine) to a JSON file.

    python benchmarks/accuracy.py training_configs/bert_crf_offline.jsonnet \
        --data-dir ../shared/data/twitter2015 --epochs 5 --seeds 13370 \
        --output benchmarks/results/bert_crf_offline_twitter2015.json

Several --seeds give one run each, and their mean and sample standard deviation (`mean_test`,
`std_test`) of P / R / F1 overall and per type; the tables show mean ± std with the number of seeds
and every seed's F1. Not a test: it takes minutes to hours. The paper's tables (several configs,
both datasets, cross-domain) are benchmarks/paper_tables.py.
"""
import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from readme_tables import markdown_table, publish

from fmit_plugin.commands.train import train_model_from_file
from fmit_plugin.common.plugins import import_plugins

TYPES = ("PER", "LOC", "ORG", "MISC")
# Paper Table 2 (bert-base-cased, ResNet-152, GPU): per-type F1 PER / LOC / ORG / MISC, then P / R / F1.
PAPER = {
    ("twitter2015", "BERT-CRF"): (84.74, 80.51, 60.27, 37.29, 69.22, 74.59, 71.81),
    ("twitter2015", "FMIT (l = 3)"): (86.77, 83.93, 64.88, 42.97, 75.11, 77.43, 76.25),
    ("twitter2017", "BERT-CRF"): (90.25, 83.05, 81.13, 62.21, 83.32, 83.57, 83.44),
    ("twitter2017", "FMIT (l = 3)"): (93.14, 86.52, 83.93, 70.90, 87.51, 86.08, 86.79),
}
# Our configs -> the paper's row they reproduce (with another encoder).
PAPER_ROW = {"bert_crf": "BERT-CRF", "bert_crf_offline": "BERT-CRF", "fmit": "FMIT (l = 3)",
             "fmit_offline": "FMIT (l = 3)"}


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def run_once(config: str, data_dir: str, epochs: int, seed: int, overrides: dict, keep: str | None) -> dict:
    os.environ["DATA_DIR"] = data_dir
    serialization_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="fmit_bench_"))
    try:
        started = time.time()
        train_model_from_file(
            config, serialization_dir,
            overrides={"trainer.num_epochs": epochs, "trainer.seed": seed, **overrides},
            force=True,
        )
        wall = time.time() - started
        metrics = json.loads((serialization_dir / "metrics.json").read_text())
        epoch_files = sorted(serialization_dir.glob("metrics_epoch_*.json"))
        durations = [json.loads(f.read_text())["epoch_duration_seconds"] for f in epoch_files]
        return {
            "seed": seed,
            "epochs_run": len(durations),
            "best_epoch": metrics.get("best_epoch"),
            "seconds_per_epoch": statistics.mean(durations) if durations else None,
            "wall_seconds": wall,
            "test": {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_")},
            "best_validation_f1": metrics.get("best_validation_f1-measure-overall"),
        }
    finally:
        if not keep:
            shutil.rmtree(serialization_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[13370])
    parser.add_argument("--overrides", default="{}", help="JSON overrides for the config")
    parser.add_argument("--output", required=True, help="results JSON file")
    parser.add_argument("--keep", help="keep the serialization dir here (single seed only)")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not update the published tables (docs/results.md, the README's headline)")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    for noisy in ("transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import_plugins()
    runs = [run_once(args.config, args.data_dir, args.epochs, seed, json.loads(args.overrides), args.keep)
            for seed in args.seeds]
    mean = {
        key: statistics.mean(run["test"].get(key, 0.0) for run in runs)
        for key in runs[0]["test"]
    }
    std = spread(runs)
    result = {
        "config": args.config,
        "data_dir": args.data_dir,
        "epochs": args.epochs,
        "overrides": json.loads(args.overrides),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "runs": runs,
        "mean_test": mean,
        **({"std_test": std} if std else {}),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    dataset = Path(args.data_dir).name
    if not args.no_readme:
        publish(f"accuracy_{dataset}", table(dataset, Path(args.output).parent))
        publish("headline_accuracy", headline(Path(args.output).parent))
    cells = [_cell(result, f"f1-measure-{t}") for t in TYPES]
    print(f"{len(runs)} seed(s), overall P/R/F1: {_cell(result, 'precision-overall')} / "
          f"{_cell(result, 'recall-overall')} / {_cell(result, 'f1-measure-overall')}; per-type F1 "
          f"{dict(zip(TYPES, cells))}; F1 per seed: {_per_seed(runs)}")


def spread(runs: list[dict]) -> dict[str, float]:
    """Sample standard deviation (n - 1) of every test score over the runs; empty for one run."""
    if len(runs) < 2:
        return {}
    return {key: statistics.stdev(run["test"].get(key, 0.0) for run in runs) for key in runs[0]["test"]}


def _cell(result: dict, key: str) -> str:
    """A score in percent, as mean ± std when several seeds were run."""
    mean = f"{100 * result['mean_test'].get(key, 0.0):.2f}"
    std = result.get("std_test", {}).get(key)
    return mean if std is None else f"{mean} ± {100 * std:.2f}"


def _per_seed(runs: list[dict]) -> str:
    return ", ".join(f"{run['seed']}: {100 * run['test'].get('f1-measure-overall', 0.0):.2f}" for run in runs)


def _results(results_dir: Path) -> list[dict]:
    """The accuracy results files of `results_dir` (those with a `mean_test`), in file name order."""
    results = [json.loads(path.read_text()) for path in sorted(results_dir.glob("*.json"))]
    return [result for result in results if isinstance(result, dict) and "mean_test" in result]


def datasets(results_dir: Path) -> list[str]:
    """The datasets (data folder names) of the accuracy results files in `results_dir`."""
    return sorted({Path(result["data_dir"]).name for result in _results(results_dir)})


def table(dataset: str, results_dir: Path) -> str:
    """Every results file of `dataset` in `results_dir` as one table, each beside its paper row."""
    rows, commands = [], []
    for result in _results(results_dir):
        if Path(result["data_dir"]).name != dataset:
            continue
        runs = result["runs"]
        commands.append(f"{result['command']}` ({result['machine']['torch_threads']} torch thread(s), "
                        f"{result['machine']['cpu_count']} cores")
        name = Path(result["config"]).stem
        cells = [_cell(result, f"f1-measure-{t}") for t in TYPES]
        cells += [_cell(result, f"{m}-overall") for m in ("precision", "recall", "f1-measure")]
        epochs = ", ".join(str(run["epochs_run"]) for run in runs)
        seconds = statistics.mean(run["seconds_per_epoch"] for run in runs)
        label = f"`{name}` ({len(runs)} seed{'s' if len(runs) > 1 else ''}"
        label += f"; F1 per seed {_per_seed(runs)})" if len(runs) > 1 else ")"
        rows.append([label, *cells, epochs, f"{seconds:.0f}"])
        paper = PAPER.get((dataset, PAPER_ROW.get(name, "")))
        if paper is not None:
            rows.append([f"paper, {PAPER_ROW[name]}", *(f"{value:.2f}" for value in paper), "", ""])
    header = ["row", *(f"F1 {t}" for t in TYPES), "P", "R", "F1", "epochs", "s / epoch"]
    return markdown_table(header, rows) + "\n" + "\n".join(f"`{command})  " for command in commands) + "\n"


# The headline table's rows: the Twitter-2015 configs, then the synthetic benchmark's rows.
HEADLINE_CONFIGS = {"BERT-CRF": "bert_crf_offline", "FMIT (l = 3)": "fmit_offline"}
HEADLINE_SYNTHETIC_ROWS = {"BERT-CRF": "text-only BERT-CRF", "FMIT (l = 3)": "FMIT (grounded objects)"}


def headline(results_dir: Path) -> str:
    """The README's headline accuracy table: test F1 of BERT-CRF and FMIT on Twitter-2015 (text only, beside
    the paper's) and on the synthetic tweets (`synthetic.json`), from the same results files as the full tables."""
    models = list(HEADLINE_CONFIGS)
    rows = []
    twitter = {Path(result["config"]).stem: result for result in _results(results_dir)
               if Path(result["data_dir"]).name == "twitter2015"}
    if all(config in twitter for config in HEADLINE_CONFIGS.values()):
        found = [twitter[HEADLINE_CONFIGS[model]] for model in models]
        seeds = {len(result["runs"]) for result in found}
        epochs = {result["epochs"] for result in found}
        rows.append(["Twitter-2015 (text only: no images here)",
                     *(_cell(result, "f1-measure-overall") for result in found),
                     " / ".join(f"{PAPER[('twitter2015', model)][-1]:.2f}" for model in models),
                     f"offline MiniLM, {', '.join(map(str, sorted(epochs)))} epochs, "
                     f"{', '.join(map(str, sorted(seeds)))} seed(s)"])
    synthetic_file = results_dir / "synthetic.json"
    if synthetic_file.is_file():
        synthetic = json.loads(synthetic_file.read_text())
        by_name = {row["row"]: row for row in synthetic["rows"]}
        found = [by_name[HEADLINE_SYNTHETIC_ROWS[model]] for model in models]
        rows.append(["synthetic tweets (only the image tells the type)",
                     *(f"{100 * row['test']['f1-measure-overall']:.1f}" for row in found), "-",
                     f"offline MiniLM + EfficientNet-Lite0, {synthetic['epochs']} epochs; FMIT "
                     f"{100 * found[1]['test_with_image']['f1-measure-overall']:.1f} on the "
                     f"{synthetic['dataset']['subset_tweets']['with_image']} tweets with an image"])
    return markdown_table(["test F1", *models, "paper (bert-base, images)", "setting"], rows)


if __name__ == "__main__":
    main()
