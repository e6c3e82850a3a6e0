"""
Spreading `predict` and `extract-visual-objects` over workers: throughput at 1, 2, ... workers
launched by `torchrun --standalone --nproc_per_node N` (gloo on CPUs, NCCL on GPUs), each worker
with OMP_NUM_THREADS=1 unless --threads says otherwise, side by side in one run.

    python benchmarks/distributed.py --workers 1 2 --tweets 2000 --images 120 --repeats 2 \
        --output benchmarks/results/distributed.json --publish

Everything is generated in a temporary folder, deterministically from --seed:

- predict: a BERT-CRF with the offline MiniLM (6 x 384, random weights: speed does not depend on
  them) packed as a model archive, tagging --tweets JSON lines of 5-20 words (batch 32, the
  default sort window). tweets/s from the command's own "Tagged N lines in S s" line: from the
  moment every worker has its model loaded to the last line written;
- extract: the visual_extraction benchmark's --images generated tweets and JPEGs, EfficientNet-Lite0
  and the precomputed grounder, into an empty store each time; images/s from the command's summary
  line (its seconds: the slowest worker's extraction, reading the data file not counted).

Both also record the command's wall time from launch to exit (Python, torch and model start-up in
every worker included), which on a loaded machine is mostly start-up.

Each row runs --repeats times, rows interleaved so that load from other processes hits each alike;
the median is reported. Every multi-worker output is checked against the 1-worker one: predict's
output file byte for byte, the store entry by entry. Not a test: minutes on a CPU.
"""
import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tango.common import Params

from fmit_plugin.common.model_paths import OFFLINE_TEXT_MODEL
from fmit_plugin.common.plugins import import_plugins
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.archival import archive_model
from fmit_plugin.models.model import Model

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import machine  # noqa: E402
from readme_tables import markdown_table, publish  # noqa: E402
from visual_extraction import VOCABULARY, generate  # noqa: E402

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def write_archive(folder: Path) -> Path:
    """A BERT-CRF with the offline MiniLM, untrained, as `allennlp train` would archive it."""
    config = {
        "dataset_reader": {"type": "twitter_mner"},
        "train_data_path": "unused",
        "model": {"type": "crf_tagger", "text_field_embedder": {
            "type": "pretrained_transformer_mismatched", "model_name": OFFLINE_TEXT_MODEL}},
        "data_loader": {"batch_size": 32},
        "trainer": {"optimizer": {"type": "adam"}, "num_epochs": 1},
    }
    run = folder / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    vocab = Vocabulary({"labels": LABELS})
    vocab.save_to_files(run / "vocabulary")
    model = Model.from_params(Params(json.loads(json.dumps(config["model"]))), vocab=vocab)
    torch.save(model.state_dict(), run / "best.th")
    return archive_model(run)


def write_tweets(path: Path, tweets: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = [json.dumps({"id": f"t{n}", "tokens": [rng.choice(VOCABULARY) for _ in range(rng.randint(5, 20))]})
             for n in range(tweets)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def launch(workers: int, arguments: list[str], cwd: Path, threads: int) -> tuple[float, float]:
    """`torchrun --standalone --nproc_per_node WORKERS -m fmit_plugin ...`: seconds from launch to exit,
    and the seconds the command itself reports for its work."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "FMIT_FILE_FRIENDLY_LOGGING": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(workers),
               "-m", "fmit_plugin", *arguments]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    reported = re.search(r"Tagged \d+ lines in ([0-9.]+) s", result.stderr) or re.search(
        r"^train \(.*; ([0-9.]+) s$", result.stdout, re.M)
    if reported is None:
        raise RuntimeError(f"no timing line in the output of {' '.join(command)}")
    return seconds, float(reported.group(1))


def store_entries(path: Path) -> dict:
    with sqlite3.connect(path) as connection:
        return {row[0]: row[1:] for row in connection.execute("SELECT key, regions, dim, features FROM objects")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tweets", type=int, default=2000, help="JSON lines for predict")
    parser.add_argument("--images", type=int, default=120, help="tweets with an image for extraction (0: skip)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each worker")
    parser.add_argument("--seed", type=int, default=13370)
    parser.add_argument("--output", default="benchmarks/results/distributed.json")
    parser.add_argument("--publish", action="store_true", help="also update the table in docs/speed.md")
    args = parser.parse_args()
    import_plugins()
    load_before = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="fmit_distributed_bench_"))
    try:
        archive = write_archive(folder)
        tweets = folder / "tweets.jsonl"
        write_tweets(tweets, args.tweets, args.seed)
        write_tweets(folder / "one.jsonl", 1, args.seed)
        predict: dict[int, list[tuple[float, float]]] = {workers: [] for workers in args.workers}
        extract: dict[int, list[tuple[float, float]]] = {workers: [] for workers in args.workers}
        if args.images:
            data_file, image_dir, groundings = generate(folder / "images", args.images, args.seed)
        for repeat in range(args.repeats):
            for workers in args.workers:
                output = folder / f"predicted_{workers}.jsonl"
                predict[workers].append(launch(
                    workers, ["predict", str(archive), str(tweets), "--output-file", str(output), "--silent",
                              "--batch-size", "32"], folder, args.threads))
                if args.images:
                    store = folder / f"store_{workers}_{repeat}.sqlite"
                    config = folder / f"extract_{workers}.json"
                    config.write_text(json.dumps({
                        "dataset_reader": {"type": "twitter_mner", "image_dir": str(image_dir), "visual_objects": {
                            "backbone": {"type": "efficientnet_lite"},
                            "grounder": {"type": "precomputed", "path": str(groundings)},
                            "store_path": str(store)}},
                        "train_data_path": str(data_file),
                    }))
                    extract[workers].append(launch(workers, ["extract-visual-objects", str(config)], folder,
                                                   args.threads))
        reference = (folder / f"predicted_{args.workers[0]}.jsonl").read_bytes()
        for workers in args.workers:
            assert (folder / f"predicted_{workers}.jsonl").read_bytes() == reference, f"{workers} workers differ"
        if args.images:
            first = store_entries(folder / f"store_{args.workers[0]}_0.sqlite")
            assert len(first) == args.images
            for workers in args.workers:
                assert store_entries(folder / f"store_{workers}_0.sqlite") == first, f"{workers} workers' store differs"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for workers in args.workers:
        wall = statistics.median(run[0] for run in predict[workers])
        work = statistics.median(run[1] for run in predict[workers])
        row = {
            "workers": workers,
            "predict_seconds": round(work, 2),
            "predict_tweets_per_second": round(args.tweets / work, 1),
            "predict_wall_seconds": round(wall, 2),
            "predict_runs": [[round(s, 2) for s in run] for run in predict[workers]],
        }
        if args.images:
            wall = statistics.median(run[0] for run in extract[workers])
            work = statistics.median(run[1] for run in extract[workers])
            row.update(extract_seconds=round(work, 2), extract_images_per_second=round(args.images / work, 2),
                       extract_wall_seconds=round(wall, 2),
                       extract_runs=[[round(s, 2) for s in run] for run in extract[workers]])
        rows.append(row)
    result = {
        "settings": {"tweets": args.tweets, "images": args.images, "repeats": args.repeats,
                     "omp_num_threads_per_worker": args.threads, "seed": args.seed,
                     "model": f"crf_tagger, {OFFLINE_TEXT_MODEL} (random weights), batch 32",
                     "extractor": "efficientnet_lite, precomputed grounder"},
        "rows": rows,
        "outputs_identical": True,  # asserted above: predict bytes and store entries, every worker count
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "notes": "other jobs may share the machine (see the load averages); rows were interleaved. "
                 "*_runs: [wall seconds from launch to exit, seconds the command reports for its work] per run",
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    if args.publish:
        publish("distributed", table(result))


def table(result: dict) -> str:
    """The published table: one row per worker count, speed-ups over the first row."""
    settings, rows = result["settings"], result["rows"]
    header = ["workers", "predict tweets/s", "speed-up", "predict wall s (start-up included)"]
    if settings["images"]:
        header += ["extraction images/s", "speed-up", "extraction wall s"]
    body = []
    for row in rows:
        cells: list[object] = [row["workers"], row["predict_tweets_per_second"],
                               f"{row['predict_tweets_per_second'] / rows[0]['predict_tweets_per_second']:.2f}x",
                               row["predict_wall_seconds"]]
        if settings["images"]:
            cells += [row["extract_images_per_second"],
                      f"{row['extract_images_per_second'] / rows[0]['extract_images_per_second']:.2f}x",
                      row["extract_wall_seconds"]]
        body.append(cells)
    cpu = result["machine"]
    load = ", ".join(str(v) for v in result["load_average_before"])
    after = ", ".join(str(v) for v in result.get("load_average_after", []))
    return markdown_table(header, body) + (
        f"\n{settings['tweets']} tweets ({settings['model']}), {settings['images']} images "
        f"({settings['extractor']}); {settings['omp_num_threads_per_worker']} thread(s) per worker, median of "
        f"{settings['repeats']}; {cpu['cpu_count']} CPU cores ({cpu['processor']}, torch {cpu['torch']}); load average "
        f"{load} before the run" + (f", {after} after" if after else "")
        + ". Outputs identical to 1 worker's (checked). "
        f"`{result['command']}`\n"
    )


if __name__ == "__main__":
    main()
