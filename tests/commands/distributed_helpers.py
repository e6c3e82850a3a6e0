"""Running a command under torchrun with two gloo CPU workers, as the training DDP test does."""
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "FMIT_FILE_FRIENDLY_LOGGING": "1", "OMP_NUM_THREADS": "1"}


def torchrun(workers: int, arguments: list[str], cwd: Path, script: str = "") -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node WORKERS -m fmit_plugin ARGUMENTS` (or `python -c
    SCRIPT ARGUMENTS` as each worker, for a worker that is made to fail)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(workers)]
    if script:
        path = cwd / "worker.py"
        path.write_text(script)
        command = [*launcher, str(path), *arguments]
    else:
        command = [*launcher, "-m", "fmit_plugin", *arguments]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, cwd=cwd)


def alone(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The same command in one process, without torchrun."""
    command = [sys.executable, "-m", "fmit_plugin", *arguments]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300, cwd=cwd)


def write_image_tweets(folder: Path) -> list[tuple[str, list[str]]]:
    """7 tweets in `folder/train.txt` (also `first_three.txt`, `last_four.txt`): 5 with images of
    several sizes and colours in `folder/images`, one with a broken image, one without; a
    `precomputed` grounder sidecar `folder/sidecar.jsonl` for three of them."""
    tweets = [(str(n), ["Zorp", "visits", "Blix", "today", "again"][: 2 + n % 4]) for n in range(7)]
    images = folder / "images"
    images.mkdir()
    for n in range(5):
        Image.new("RGB", (40 + 8 * n, 64 - 4 * n), (40 * n, 200 - 30 * n, 90)).save(images / f"{n}.jpg")
    (images / "5.jpg").write_bytes(b"not really a jpeg")
    sidecar = [{"image_id": str(n), "regions": [{"phrase": "Zorp", "span": [0, 0], "box": [0, 0, 20 + n, 30]}]}
               for n in range(0, 5, 2)]
    (folder / "sidecar.jsonl").write_text("".join(json.dumps(line) + "\n" for line in sidecar))
    blocks = [f"IMGID:{image_id}\n" + "".join(f"{w}\t{'B-PER' if k == 0 else 'O'}\n" for k, w in enumerate(words))
              for image_id, words in tweets]
    (folder / "train.txt").write_text("\n".join(blocks), encoding="utf-8")
    (folder / "first_three.txt").write_text("\n".join(blocks[:3]), encoding="utf-8")
    (folder / "last_four.txt").write_text("\n".join(blocks[3:]), encoding="utf-8")
    return tweets


def visual_reader(folder: Path, store: str) -> dict:
    """A `twitter_mner` reader of `write_image_tweets`' files with EfficientNet-Lite0 visual objects."""
    return {
        "type": "twitter_mner",
        "image_dir": str(folder / "images"),
        "visual_objects": {
            "backbone": {"type": "efficientnet_lite"},
            "grounder": {"type": "precomputed", "path": str(folder / "sidecar.jsonl")},
            "store_path": str(folder / store),
        },
    }
