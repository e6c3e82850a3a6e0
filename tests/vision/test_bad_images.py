"""
Hostile image folders (issue 8): symlink loops, folders named like images, 0 x 0 and 1 x 50000
images. None of them raises: the reader finds no image or the loader gives the paper's empty
image, counted in the one summary line. Regression images live in tests/fixtures/bad_input/images/.
"""
import os
import shutil
from pathlib import Path
from typing import Optional

import pytest
import torch
from PIL import Image

from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.vision.grounders import WholeImageGrounder
from fmit_plugin.vision.image_loading import EMPTY_IMAGE_SHA256, empty_image, load_image
from fmit_plugin.vision.visual_object_extractor import VisualObjectExtractor
from tests.bad_input_helpers import MeanColourBackbone

IMAGE_FIXTURES = Path(__file__).parents[1] / "fixtures" / "bad_input" / "images"


def test_zero_by_zero_png_is_the_empty_image():
    path = IMAGE_FIXTURES / "zero_by_zero.png"
    assert path.read_bytes()[16:24] == b"\x00" * 8  # the IHDR width and height
    loaded = load_image(str(path))
    assert loaded.status == "corrupt" and str(path) in loaded.message
    assert loaded.sha256 == EMPTY_IMAGE_SHA256
    assert loaded.image.tobytes() == empty_image().tobytes()


def test_one_by_fifty_thousand_png_is_degenerate_and_never_decoded():
    path = IMAGE_FIXTURES / "one_by_50000.png"
    with Image.open(path) as image:
        assert image.size == (1, 50000)
    loaded = load_image(str(path))
    assert loaded.status == "degenerate" and "1x50000" in loaded.message
    assert loaded.image.size == empty_image().size


@pytest.fixture
def hostile_folder(tmp_path):
    """An image folder holding one good image and every hostile kind, and a data file naming them."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (250, 0, 0)).save(images / "good.jpg")
    os.symlink(images / "loop_b.jpg", images / "loop.jpg")
    os.symlink(images / "loop.jpg", images / "loop_b.jpg")
    (images / "folder.jpg").mkdir()  # a folder named like an image ...
    Image.new("RGB", (8, 8), (0, 0, 250)).save(images / "folder.png")  # ... beside the real image
    (images / "dangling.jpg").symlink_to(images / "nowhere.jpg")
    shutil.copy(IMAGE_FIXTURES / "zero_by_zero.png", images / "zero.png")
    shutil.copy(IMAGE_FIXTURES / "one_by_50000.png", images / "strip.png")
    ids = ["good", "loop", "folder", "dangling", "zero", "strip", "absent"]
    data = tmp_path / "data.txt"
    data.write_text("".join(f"IMGID:{i}\nword\tO\n\n" for i in ids), encoding="utf-8")
    return images, data, ids


def test_reader_skips_links_loops_and_folders_named_like_images(hostile_folder):
    images, data, ids = hostile_folder
    reader = TwitterMnerReader(image_dir=str(images))
    paths = {i.image_id: i.image_path for i in reader.read(str(data))}
    assert paths == {
        "good": str(images / "good.jpg"),
        "loop": None,  # a symlink loop is no file
        "folder": str(images / "folder.png"),  # the folder folder.jpg is passed over
        "dangling": None,
        "zero": str(images / "zero.png"),  # found; the loader decides it is unusable
        "strip": str(images / "strip.png"),
        "absent": None,
    }
    assert reader.last_statistics.missing_images == 3


def test_visual_objects_over_hostile_images_use_the_empty_image_and_count_it(hostile_folder):
    images, data, _ = hostile_folder
    extractor = VisualObjectExtractor(backbone=MeanColourBackbone(), grounder=WholeImageGrounder())
    reader = TwitterMnerReader(image_dir=str(images), visual_objects=extractor)
    instances = reader.read(str(data))
    summary = reader.last_visual_summary
    assert summary is not None and summary.tweets == len(instances) == 7
    assert dict(summary.images.counts) == {"ok": 2, "missing": 3, "corrupt": 1, "degenerate": 1}
    grey = torch.tensor([128 / 255.0] * 3)
    by_id = {i.image_id: i.visual.features[0] for i in instances}
    assert torch.allclose(by_id["good"], torch.tensor([250 / 255.0, 0, 0]), atol=0.02)
    assert torch.allclose(by_id["folder"], torch.tensor([0, 0, 250 / 255.0]), atol=0.02)
    for image_id in ("loop", "dangling", "zero", "strip", "absent"):
        assert torch.allclose(by_id[image_id], grey, atol=1e-4), image_id
    # every tweet whose image could not be used says so, naming why; the others say nothing
    warnings = {i.image_id: i.warnings for i in instances}
    assert warnings["good"] == [] and warnings["folder"] == []
    assert [w.split(":")[0] for w in warnings["strip"]] == ["image not used (degenerate"]
    assert all(len(warnings[i]) == 1 and "uniform empty image" in warnings[i][0]
               for i in ("loop", "dangling", "zero", "strip", "absent"))
    # the loader itself, given the hostile paths directly, never raises either
    assert load_image(str(images / "loop.jpg")).status == "not_a_file"
    assert load_image(str(images / "folder.jpg")).status == "not_a_file"
    assert load_image(str(images / "dangling.jpg")).status == "missing"


# ------------------------------------------------------------------ checked with stat before a byte is read (issue 16)


def _forbid_opening(monkeypatch) -> None:
    def refuse(path, *args, **kwargs):
        raise AssertionError(f"{path} was opened")

    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr("builtins.open", refuse)


@pytest.fixture
def no_opening(monkeypatch):
    """Opening any file fails the test: what `stat` refuses must never be opened (a FIFO would
    block, a device never ends, a 2 GB file would be read whole)."""
    _forbid_opening(monkeypatch)


def _refused(path: str, status: str, *fragments: str, max_bytes: Optional[int] = None) -> None:
    loaded = load_image(path) if max_bytes is None else load_image(path, max_bytes=max_bytes)
    assert loaded.status == status, loaded.message
    assert loaded.sha256 == EMPTY_IMAGE_SHA256 and loaded.image.tobytes() == empty_image().tobytes()
    for fragment in (path, *fragments):
        assert fragment in loaded.message, loaded.message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_refused_unopened(tmp_path, no_opening):
    os.mkfifo(tmp_path / "pipe.jpg")
    _refused(str(tmp_path / "pipe.jpg"), "not_a_file", "a FIFO")


def test_a_folder_is_refused_unopened(tmp_path, no_opening):
    (tmp_path / "folder.jpg").mkdir()
    _refused(str(tmp_path / "folder.jpg"), "not_a_file", "a folder")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused_unopened(no_opening):
    _refused("/dev/zero", "not_a_file", "a character device")


def test_a_socket_is_refused_unopened(tmp_path):
    import socket

    path = tmp_path / "s.jpg"
    if len(str(path)) > 100 or not hasattr(socket, "AF_UNIX"):
        pytest.skip("no room for a Unix socket path here")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
        _refused(str(path), "not_a_file", "a socket")
    finally:
        server.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="no /proc")
def test_a_proc_file_is_refused_unopened(no_opening):
    # /proc files stat as regular files of 0 bytes, whatever reading them would give
    assert os.stat("/proc/self/status").st_size == 0
    _refused("/proc/self/status", "empty_file", "0 bytes", "/proc")


def test_a_two_gigabyte_file_named_jpg_is_refused_unopened(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.truncate(2 * 1024**3)  # sparse: 2 GB by stat, no disk used
    _forbid_opening(monkeypatch)
    _refused(str(path), "too_large", "2147483648 bytes > max_bytes 50000000")


def test_the_byte_limit_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (8, 8), (250, 0, 0)).save(path)
    assert load_image(str(path)).status == "ok"
    _refused(str(path), "too_large", f"> max_bytes {10}", max_bytes=10)
    extractor = VisualObjectExtractor(backbone=MeanColourBackbone(), max_bytes=10)
    reader = TwitterMnerReader(visual_objects=extractor)
    instance = reader.text_to_instance(["word"], image=str(path))
    assert instance.visual is not None and instance.visual.image_status == "too_large"


@pytest.mark.parametrize("url", ["https://pbs.twimg.com/media/x.jpg", "http://example.com/a.png", "file:///tmp/a.jpg",
                                 "s3://bucket/a.jpg"])
def test_a_url_is_refused_not_fetched(url, no_opening):
    _refused(url, "url", "local files")
