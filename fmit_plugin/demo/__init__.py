"""
The offline demo (`make demo`, `python -m fmit_plugin.demo [OUTPUT_DIR]`), on the embedded synthetic tweets
whose images alone decide the entity types (`fmit_plugin.synthetic`):

1. extract the visual objects (the dataset's grounding sidecar, EfficientNet-Lite0 features) into a store;
2. train FMIT (l = 3) with the offline MiniLM;
3. evaluate on the test tweets;
4. tag a few test tweets with their images and draw the pictures of those predictions.

Each step is the `allennlp` command it prints, so a user can rerun any of them by hand.
"""
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from PIL import Image

DEMO_DATA = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "training_configs" / "fmit_demo.jsonnet"
# The embedded set is `python -m fmit_plugin.synthetic fmit_plugin/demo/data --image-size 64 64 --seed 0`.
DEMO_SEED = 0
DEMO_IMAGE_SIZE = (64, 64)
DEFAULT_EPOCHS = 8
NUM_EXAMPLES = 4


def _dataset(run: Path) -> Path:
    """The embedded dataset, or (in an installation without it) the same one generated under `run`."""
    if (DEMO_DATA / "train.txt").is_file() and (DEMO_DATA / "images").is_dir():
        return DEMO_DATA
    from fmit_plugin.synthetic.generator import generate_dataset

    generated = run / "data"
    print(f"$ python -m fmit_plugin.synthetic {generated} --image-size 64 64 --seed {DEMO_SEED} --overwrite")
    generate_dataset(generated, seed=DEMO_SEED, image_size=DEMO_IMAGE_SIZE, overwrite=True)
    return generated


def _examples(test_file: Path, image_dir: Path, count: int) -> list[dict[str, Any]]:
    """The first test tweets with an image and two or more entities: the cases only the image can type."""
    from fmit_plugin.data.span_utils import bio_tags_to_spans
    from fmit_plugin.data.twitter_mner import TwitterMnerReader

    examples = []
    for instance in TwitterMnerReader(image_dir=str(image_dir)).read(str(test_file)):
        if instance.image_path and instance.tags and len(bio_tags_to_spans(instance.tags)) >= 2:
            examples.append({"id": instance.image_id, "tokens": instance.words, "image": instance.image_path})
        if len(examples) == count:
            break
    return examples


def stack_pictures(paths: list[Path], output: Path) -> Optional[Path]:
    """One PNG holding the given pictures one above the other."""
    pictures = [Image.open(path).convert("RGB") for path in paths]
    if not pictures:
        return None
    sheet = Image.new("RGB", (max(p.width for p in pictures), sum(p.height for p in pictures)), (255, 255, 255))
    top = 0
    for picture in pictures:
        sheet.paste(picture, (0, top))
        top += picture.height
    sheet.save(output, format="PNG")
    return output


def main(output_dir: str = "runs/demo") -> None:
    from fmit_plugin.commands.evaluate import evaluate_archive
    from fmit_plugin.commands.extract_visual_objects import extract_visual_objects
    from fmit_plugin.commands.predict import predict_file
    from fmit_plugin.commands.train import train_model_from_file
    from fmit_plugin.common.plugins import import_plugins

    if not CONFIG.is_file():
        sys.exit(f"The demo runs from a clone of the repository: {CONFIG} not found")
    import_plugins()
    run = Path(output_dir)
    data = _dataset(run)
    os.environ["DATA_DIR"] = str(data)
    os.environ.setdefault("NUM_EPOCHS", str(DEFAULT_EPOCHS))
    os.environ.setdefault("FEATURE_STORE", str(run.parent / "demo_visual_features.sqlite"))
    config = os.path.relpath(CONFIG)
    settings = f"DATA_DIR={data} FEATURE_STORE={os.environ['FEATURE_STORE']} NUM_EPOCHS={os.environ['NUM_EPOCHS']}"

    print(f"$ allennlp extract-visual-objects {config}   ({settings})")
    extract_visual_objects(str(CONFIG))
    print(f"\n$ allennlp train {config} -s {run} -f")
    train_model_from_file(CONFIG, run, force=True)
    archive = run / "model.tar.gz"
    print(f"\n$ allennlp evaluate {archive} {data / 'test.txt'} --output-file {run / 'evaluation.json'}")
    evaluate_archive(archive, data / "test.txt", output_file=run / "evaluation.json")

    inputs = run / "examples.jsonl"
    examples = _examples(data / "test.txt", data / "images", NUM_EXAMPLES)
    inputs.write_text("".join(json.dumps(example) + "\n" for example in examples), encoding="utf-8")
    pictures = run / "pictures"
    print(f"\n$ allennlp predict {archive} {inputs} --output-file {run / 'predictions.jsonl'} --render-dir {pictures}")
    predict_file(archive, str(inputs), str(run / "predictions.jsonl"), silent=True, render_dir=str(pictures))
    sheet = stack_pictures(sorted(pictures.glob("*.png")), run / "predictions.png")

    metrics = json.loads((run / "evaluation.json").read_text(encoding="utf-8"))
    print(f"\nTest F1 {100 * metrics['f1-measure-overall']:.1f} on tweets whose entity types only the images tell.")
    print(f"Archive:     {archive}\nPredictions: {run / 'predictions.jsonl'}")
    if sheet is not None:
        print(f"Picture:     {sheet}  (one per example in {pictures})")
