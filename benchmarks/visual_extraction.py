"""
Visual-object extraction benchmark: the `twitter_mner` reader with `visual_objects` on generated
tweets, first with an empty feature store (images and regions per second through the backbone),
then again with a fresh reader on the warm store (instances per second, and every instance must get
exactly the features of the first pass), plus the store's size on disk.

    OMP_NUM_THREADS=1 python benchmarks/visual_extraction.py --tweets 200 \
        --output benchmarks/results/visual_extraction.json

Everything is generated in a temporary folder, deterministically from --seed: N tweets in the
Twitter IMGID format, one JPEG each (random size from 200 x 150 to 640 x 480, random coloured
rectangles and ellipses) and a `precomputed` grounder sidecar with 1-3 regions per image. The
backbone is the offline EfficientNet-Lite0. Not a test: it takes minutes on a CPU.
"""
import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from tango.common import Params

from fmit_plugin.common.plugins import import_plugins
from fmit_plugin.data.dataset_reader import DatasetReader

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import machine  # noqa: E402
from readme_tables import markdown_table, publish  # noqa: E402

VOCABULARY = (
    "RT the a of in on at with and to for from is was new big old city team game news day night love "
    "vote live show music match park river school street market festival weather police airport "
    "George Zimmerman Obama London Paris Texas Apple Google NASA Chelsea Lakers Taylor Swift Boston"
).split()
TYPES = ("PER", "LOC", "ORG", "MISC")


def generate(folder: Path, tweets: int, seed: int) -> tuple[Path, Path, Path]:
    """Writes `tweets.txt`, `images/<id>.jpg` and `groundings.jsonl` under `folder`."""
    rng = random.Random(seed)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True)
    blocks, sidecar = [], []
    for index in range(tweets):
        image_id = str(1_000_000 + index)
        words = [rng.choice(VOCABULARY) for _ in range(rng.randint(5, 20))]
        tags = ["O"] * len(words)
        width, height = rng.randint(200, 640), rng.randint(150, 480)
        image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(3, 10)):
            x0, x1 = sorted(rng.sample(range(width), 2))
            y0, y1 = sorted(rng.sample(range(height), 2))
            shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
            shape((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
        image.save(image_dir / f"{image_id}.jpg", "JPEG", quality=90)
        regions = []
        for _ in range(rng.randint(1, 3)):
            first = rng.randrange(len(words))
            last = min(len(words) - 1, first + rng.randint(0, 2))
            kind = rng.choice(TYPES)
            tags[first] = f"B-{kind}"
            for position in range(first + 1, last + 1):
                tags[position] = f"I-{kind}"
            x0, x1 = sorted(rng.sample(range(width + 1), 2))
            y0, y1 = sorted(rng.sample(range(height + 1), 2))
            regions.append({"phrase": " ".join(words[first : last + 1]), "span": [first, last],
                            "box": [x0, y0, x1, y1], "score": round(rng.uniform(0.3, 1.0), 3)})
        sidecar.append(json.dumps({"image_id": image_id, "regions": regions}))
        blocks.append("\n".join([f"IMGID:{image_id}", *(f"{w}\t{t}" for w, t in zip(words, tags))]))
    data_file, groundings = folder / "tweets.txt", folder / "groundings.jsonl"
    data_file.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    groundings.write_text("\n".join(sidecar) + "\n", encoding="utf-8")
    return data_file, image_dir, groundings


def store_bytes(store_path: Path) -> int:
    """The SQLite file plus its WAL and shared-memory files, whichever exist."""
    files = [store_path, *(store_path.with_name(store_path.name + suffix) for suffix in ("-wal", "-shm"))]
    return sum(f.stat().st_size for f in files if f.is_file())


def read_pass(config: dict, data_file: Path) -> tuple[list, dict]:
    """Builds a fresh reader (timed apart: the backbone loads once per reader) and reads the file."""
    started = time.perf_counter()
    reader = DatasetReader.from_params(Params(json.loads(json.dumps(config))))
    setup = time.perf_counter() - started
    started = time.perf_counter()
    instances = reader.read(str(data_file))
    wall = time.perf_counter() - started
    summary = reader.last_visual_summary
    assert summary is not None
    reader.visual_objects.store.close()  # checkpoints the WAL into the main file
    return instances, {
        "setup_seconds": round(setup, 3),
        "wall_seconds": round(wall, 3),
        "tweets": summary.tweets,
        "cache_hits": summary.cache_hits,
        "regions": summary.regions,
        "images_ok": summary.images.counts["ok"],
        "image_failures": summary.images.failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tweets", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13370)
    parser.add_argument("--grounder", choices=("precomputed", "grid"), default="precomputed")
    parser.add_argument("--grid-k", type=int, default=7, help="cells per side for --grounder grid")
    parser.add_argument("--max-objects", type=int,
                        help="default 16, or k * k + 1 for --grounder grid (every cell kept)")
    parser.add_argument("--batch-size", type=int, default=32, help="image crops per backbone call")
    parser.add_argument("--output", default="benchmarks/results/visual_extraction.json", help="results JSON file")
    parser.add_argument("--keep", help="generate into this folder and keep it, instead of a temporary one")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not update the published table (docs/visual_objects.md)")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    import_plugins()

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fmit_visual_bench_"))
    if args.keep:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    try:
        started = time.perf_counter()
        data_file, image_dir, groundings = generate(folder, args.tweets, args.seed)
        generate_seconds = time.perf_counter() - started
        store_path = folder / "store" / "visual_objects.sqlite"
        if args.grounder == "grid":
            grounder: dict = {"type": "grid", "k": args.grid_k}
            max_objects = args.max_objects or args.grid_k * args.grid_k + 1
        else:
            grounder = {"type": "precomputed", "path": str(groundings)}
            max_objects = args.max_objects or 16
        config = {
            "type": "twitter_mner",
            "image_dir": str(image_dir),
            "visual_objects": {
                "backbone": {"type": "efficientnet_lite"},
                "grounder": grounder,
                "store_path": str(store_path),
                "max_objects": max_objects,
                "batch_size": args.batch_size,
            },
        }

        cold_instances, cold = read_pass(config, data_file)
        assert cold["cache_hits"] == 0, f"the store was not empty: {cold['cache_hits']} hits"
        assert cold["images_ok"] == args.tweets, f"only {cold['images_ok']} of {args.tweets} images loaded"
        warm_instances, warm = read_pass(config, data_file)
        assert warm["cache_hits"] == args.tweets, f"only {warm['cache_hits']} of {args.tweets} came from the store"
        assert len(warm_instances) == len(cold_instances) == args.tweets
        for first, second in zip(cold_instances, warm_instances):
            assert first.visual is not None and second.visual is not None
            assert torch.equal(first.visual.features, second.visual.features), f"features differ: {first.image_id}"
            assert torch.equal(first.visual.spans, second.visual.spans), f"spans differ: {first.image_id}"
            assert first.visual.labels == second.visual.labels, f"labels differ: {first.image_id}"
        size = store_bytes(store_path)
        dim = cold_instances[0].visual.features.shape[1]
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    cold["images_per_second"] = round(cold["tweets"] / cold["wall_seconds"], 2)
    cold["regions_per_second"] = round(cold["regions"] / cold["wall_seconds"], 2)
    warm["instances_per_second"] = round(warm["tweets"] / warm["wall_seconds"], 2)
    threads = [f"{name}={os.environ[name]}" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if name in os.environ]
    result = {
        "settings": {
            "tweets": args.tweets,
            "seed": args.seed,
            "backbone": config["visual_objects"]["backbone"],
            "grounder": args.grounder if args.grounder == "precomputed" else grounder,
            "max_objects": max_objects,
            "batch_size": args.batch_size,
            "feature_dim": dim,
            "torch_num_threads": torch.get_num_threads(),
            "generate_seconds": round(generate_seconds, 3),
        },
        "cold_store": cold,
        "warm_store": warm,
        "notes": "regions count every visual object, the whole image included; wall seconds are the read "
                 "(parsing, image loading, grounding, backbone, store) without building the reader (setup_seconds)",
        "warm_matches_cold": True,  # asserted above, per instance: features, spans and labels
        "store_bytes": size,
        "store_bytes_per_region": round(size / cold["regions"], 1),
        "speedup_warm_over_cold": round(cold["wall_seconds"] / warm["wall_seconds"], 1),
        "command": " ".join([*threads, "python", *sys.argv]),
        "machine": machine(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if not args.no_readme:
        publish("visual_extraction", table(result))
    print(table(result))


def table(result: dict) -> str:
    """The published table (docs/visual_objects.md) of one results file."""
    settings, cold, warm = result["settings"], result["cold_store"], result["warm_store"]
    grounder = settings["grounder"] if isinstance(settings["grounder"], str) else settings["grounder"]["type"]
    caption = (
        f"{settings['tweets']} generated tweets, one image each (200 x 150 to 640 x 480), EfficientNet-Lite0 "
        f"({settings['feature_dim']}-d) + `{grounder}` grounder, {settings['torch_num_threads']} torch thread(s) on "
        f"{result['machine']['cpu_count']} CPU cores (`{result['command']}`):\n\n"
    )
    return caption + markdown_table(
        ["pass", "tweets", "regions", "seconds", "throughput"],
        [
            ["extraction, empty store", cold["tweets"], cold["regions"], cold["wall_seconds"],
             f"{cold['images_per_second']:.1f} images/s, {cold['regions_per_second']:.1f} regions/s"],
            ["reader, warm store", warm["tweets"], warm["regions"], warm["wall_seconds"],
             f"{warm['instances_per_second']:.0f} instances/s (identical features)"],
        ],
    ) + f"\nStore: {result['store_bytes'] / 2**20:.2f} MiB, {result['store_bytes_per_region']:.0f} bytes per region.\n"

if __name__ == "__main__":
    main()
