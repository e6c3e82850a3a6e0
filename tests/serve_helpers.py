"""Helpers shared by the API and serving tests (issue 15): a tiny image backbone and tiny archives whose
reader extracts visual objects, so predictions carry images, regions and objects in seconds."""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from tango.common import Params

from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.model import Model
from fmit_plugin.vision.backbones import ImageBackbone
from tests.bad_input_helpers import LABELS, HashingEmbedder  # noqa: F401 - registers "test_hashing"

ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = ROOT / "fmit_plugin" / "demo" / "data"


@ImageBackbone.register("test_mean_colour", exist_ok=True)
class MeanColourBackbone(ImageBackbone):
    """A backbone for tests: each image's (crop's) mean red, green and blue, centred on 0 and scaled to
    about unit size; a 1 x 1 map."""

    def get_output_dim(self) -> int:
        return 3

    def cache_key(self) -> str:
        return "test_mean_colour"

    def _feature_map(self, images: list[Image.Image]) -> torch.Tensor:
        means = [np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0) / 64.0 - 2.0 for image in images]
        return torch.tensor(np.stack(means)).view(len(images), 3, 1, 1)


def visual_reader(sidecar: Optional[Path] = None, image_dir: Optional[Path] = None) -> dict[str, Any]:
    """A twitter_mner reader config whose visual objects come from the mean-colour backbone and the
    `precomputed` grounder (reading `sidecar`)."""
    reader: dict[str, Any] = {"type": "twitter_mner", "visual_objects": {"backbone": {"type": "test_mean_colour"}}}
    if sidecar is not None:
        reader["visual_objects"]["grounder"] = {"type": "precomputed", "path": str(sidecar)}
    if image_dir is not None:
        reader["image_dir"] = str(image_dir)
    return reader


def write_visual_run(
    directory: Path, sidecar: Optional[Path] = None, image_dir: Optional[Path] = None, poison: Optional[str] = None,
    bias: tuple[float, ...] = (1.5, 0.3, 0.3, 0.3, 0.0),
) -> Path:
    """A serialization directory of an untrained hashing-embedder tagger whose reader extracts visual
    objects (grounded by `sidecar`): what `load_archive` needs, without training. `poison`: a word the
    model breaks on; `bias`: the tag emissions' bias (O, B-PER, I-PER, B-LOC, I-LOC)."""
    embedder: dict[str, Any] = {"type": "test_hashing"}
    if poison is not None:
        embedder["poison"] = poison
    config = {"dataset_reader": visual_reader(sidecar, image_dir),
              "model": {"type": "crf_tagger", "text_field_embedder": embedder},
              "data_loader": {"batch_size": 8}}
    vocab = Vocabulary({"labels": LABELS})
    torch.manual_seed(0)
    model = Model.from_params(Params(json.loads(json.dumps(config["model"]))), vocab=vocab)
    with torch.no_grad():  # by default mostly O, with some entities, so outputs have both
        model.tagging_head.projection.bias.copy_(torch.tensor(bias))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    vocab.save_to_files(directory / "vocabulary")
    torch.save(model.state_dict(), directory / "best.th")
    return directory


def demo_images(target: Path, names: list[str]) -> Path:
    """Copies some of the demo's synthetic images (PNG) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(DEMO_DATA / "images" / f"{name}.png", target / f"{name}.png")
    return target


def demo_sidecar(target: Path, names: list[str]) -> Path:
    """The demo's sidecar lines for `names` only."""
    lines = [line for line in (DEMO_DATA / "groundings.jsonl").read_text(encoding="utf-8").splitlines()
             if json.loads(line)["image_id"] in names]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def demo_tweet(name: str) -> list[str]:
    """The tokens of the demo tweet whose image is `name`."""
    split = name.split("_")[1]
    blocks = (DEMO_DATA / f"{split}.txt").read_text(encoding="utf-8").strip().split("\n\n")
    for block in blocks:
        lines = block.splitlines()
        if lines[0] == f"IMGID:{name}":
            return [line.split("\t")[0] for line in lines[1:]]
    raise KeyError(name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(process: subprocess.Popen, url: str, timeout: float, read_log: Callable[[], str]) -> None:
    """Returns once the `allennlp serve` `process` answers `url`/health; raises with the end of its log if
    it exits or does not answer within `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"allennlp serve did not come up (exit {process.poll()}):\n{read_log()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)


@contextlib.contextmanager
def running_server(run: Path, *arguments: str, timeout: float = 180.0) -> Iterator[str]:
    """A real `allennlp serve RUN` subprocess on a free loopback port; yields its base URL once /health
    answers, and stops it afterwards. Its log is in the error message if it does not come up."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "fmit_plugin", "serve", str(run), "--port", str(port),
               "--include-package", "tests.serve_helpers", *arguments]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def read_log() -> str:
        log.seek(0)
        return log.read().decode("utf-8", "replace")

    try:
        wait_until_healthy(process, url, timeout, read_log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
