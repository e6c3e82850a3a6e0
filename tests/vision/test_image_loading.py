"""`load_image` on real small files: good images of every mode, and every kind of bad file."""
import io
import os
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from fmit_plugin.vision.image_loading import (
    EMPTY_IMAGE_SHA256,
    EMPTY_IMAGE_SIZE,
    ImageLoadReport,
    LoadedImage,
    degenerate_reason,
    empty_image,
    load_image,
)


def noisy_image(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    # Noise compresses badly, so a JPEG of it is long enough that half of it loses real image data.
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))


def save(image: Image.Image, path: Path, **kwargs) -> str:
    image.save(path, **kwargs)
    return str(path)


def assert_empty(loaded: LoadedImage, status: str) -> None:
    assert loaded.status == status, loaded.message
    assert not loaded.ok
    assert loaded.sha256 == EMPTY_IMAGE_SHA256
    assert loaded.image.mode == "RGB" and loaded.image.size == EMPTY_IMAGE_SIZE
    assert loaded.image.tobytes() == empty_image().tobytes()


def test_empty_image_is_uniform_grey():
    image = empty_image()
    assert image.mode == "RGB" and image.size == EMPTY_IMAGE_SIZE
    assert image.getextrema() == ((128, 128), (128, 128), (128, 128))
    assert empty_image((10, 20)).size == (10, 20)


@pytest.mark.parametrize(
    "mode, suffix",
    [("RGB", ".jpg"), ("RGB", ".png"), ("RGBA", ".png"), ("P", ".png"), ("L", ".png"), ("P", ".gif"),
     ("CMYK", ".jpg"), ("LA", ".png"), ("1", ".bmp")],
)
def test_good_images_load_as_rgb(tmp_path, mode, suffix):
    image = noisy_image((40, 30)).convert(mode)
    path = save(image, tmp_path / f"image{suffix}")
    loaded = load_image(path)
    assert loaded.status == "ok", loaded.message
    assert loaded.ok and loaded.path == path and path in loaded.message
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (40, 30)
    assert len(loaded.sha256) == 64 and loaded.sha256 != EMPTY_IMAGE_SHA256


def test_rgb_png_pixels_survive(tmp_path):
    image = noisy_image((20, 10))
    loaded = load_image(save(image, tmp_path / "a.png"))
    assert loaded.image.tobytes() == image.tobytes()


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    image = Image.new("I;16", (8, 8), 0)
    image.putpixel((0, 0), 40000)
    image.putpixel((1, 0), 65535)
    loaded = load_image(save(image, tmp_path / "deep.png"))
    assert loaded.status == "ok"
    assert loaded.image.getpixel((0, 0)) == (156, 156, 156)  # 40000 / 256, not clipped to 255
    assert loaded.image.getpixel((1, 0)) == (255, 255, 255)
    assert loaded.image.getpixel((2, 0)) == (0, 0, 0)


def test_exif_orientation_is_applied(tmp_path):
    image = noisy_image((40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = save(image, tmp_path / "rotated.jpg", exif=exif)
    assert Image.open(path).size == (40, 20)
    loaded = load_image(path)
    assert loaded.status == "ok"
    assert loaded.image.size == (20, 40)


def test_missing_and_none(tmp_path):
    assert_empty(load_image(None), "missing")
    loaded = load_image(str(tmp_path / "nope.jpg"))
    assert_empty(loaded, "missing")
    assert str(tmp_path / "nope.jpg") in loaded.message
    dangling = tmp_path / "dangling.jpg"
    os.symlink(tmp_path / "gone.jpg", dangling)
    assert_empty(load_image(str(dangling)), "missing")


def test_path_objects_are_accepted(tmp_path):
    path = Path(save(noisy_image((10, 10)), tmp_path / "a.png"))
    assert load_image(path).status == "ok"  # type: ignore[arg-type]


def test_zero_byte_file(tmp_path):
    path = tmp_path / "zero.jpg"
    path.write_bytes(b"")
    assert_empty(load_image(str(path)), "empty_file")


def test_truncated_jpeg_is_corrupt(tmp_path):
    data = io.BytesIO()
    noisy_image((64, 64)).save(data, format="JPEG", quality=95)
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    loaded = load_image(str(path))
    assert_empty(loaded, "corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # not switched on behind the caller's back


def test_text_file_named_jpg_is_corrupt(tmp_path):
    path = tmp_path / "text.jpg"
    path.write_text("<html>404 not found</html>\n", encoding="utf-8")
    loaded = load_image(str(path))
    assert_empty(loaded, "corrupt")
    assert str(path) in loaded.message


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    assert_empty(load_image(str(tmp_path / "x.jpg")), "not_a_file")


def test_symlink_loop(tmp_path):
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    assert_empty(load_image(str(tmp_path / "a.jpg")), "not_a_file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    assert_empty(load_image(str(tmp_path / "pipe.jpg")), "not_a_file")


def test_decompression_bomb_is_refused_from_the_header(tmp_path, monkeypatch):
    # 5000 x 5000 one-bit pixels compress to a few KB; the header alone says 25M pixels.
    path = save(Image.new("1", (5000, 5000)), tmp_path / "bomb.png")
    assert os.path.getsize(path) < 100_000

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    loaded = load_image(path, max_pixels=10_000_000)
    assert_empty(loaded, "too_large")
    assert "5000x5000" in loaded.message


def test_pillow_bomb_limits_count_as_too_large(tmp_path):
    # Over twice Pillow's MAX_IMAGE_PIXELS: Image.open itself raises DecompressionBombError.
    path = save(Image.new("1", (20000, 20000)), tmp_path / "huge.png")
    assert_empty(load_image(path, max_pixels=10_000_000), "too_large")
    assert_empty(load_image(path), "too_large")
    # A caller may allow more than Pillow's warning limit, not more than its hard limit.
    assert_empty(load_image(path, max_pixels=10**12), "too_large")


def test_degenerate_images(tmp_path):
    assert_empty(load_image(save(Image.new("RGB", (1, 5000)), tmp_path / "strip.png")), "degenerate")
    assert_empty(load_image(save(Image.new("RGB", (3, 400)), tmp_path / "thin.png")), "degenerate")
    assert load_image(save(Image.new("RGB", (2, 200)), tmp_path / "edge.png")).status == "ok"
    # Pillow cannot write a 0-size image, so the rule is tested directly.
    assert degenerate_reason(0, 10) is not None
    assert degenerate_reason(10, 0) is not None
    assert degenerate_reason(1, 1) is not None
    assert degenerate_reason(50000, 1) is not None
    assert "aspect" in degenerate_reason(303, 3)
    assert degenerate_reason(300, 3) is None
    assert degenerate_reason(1000, 10) is None
    assert degenerate_reason(640, 480) is None


def test_failures_share_one_image_and_digest(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello", encoding="utf-8")
    failures = [load_image(str(tmp_path / name)) for name in ("nope.jpg", "dir.jpg", "zero.jpg", "text.jpg")]
    assert [loaded.status for loaded in failures] == ["missing", "not_a_file", "empty_file", "corrupt"]
    assert {loaded.sha256 for loaded in failures} == {EMPTY_IMAGE_SHA256}
    assert len({loaded.image.tobytes() for loaded in failures}) == 1


def test_digest_follows_the_bytes(tmp_path):
    first = save(noisy_image((16, 16), seed=1), tmp_path / "one.png")
    other = save(noisy_image((16, 16), seed=2), tmp_path / "two.png")
    copy = shutil.copy(first, tmp_path / "copy.png")
    assert load_image(first).sha256 == load_image(first).sha256 == load_image(str(copy)).sha256
    assert load_image(first).sha256 != load_image(other).sha256


def test_report_counts_and_summary(tmp_path):
    good = save(noisy_image((16, 16)), tmp_path / "good.png")
    (tmp_path / "text.jpg").write_text("hello", encoding="utf-8")
    report = ImageLoadReport(max_examples=2)
    assert report.summary() == "images: 0 read, 0 empty"
    for _ in range(3):
        report.add(load_image(good))
    for index in range(3):
        report.add(load_image(str(tmp_path / f"missing{index}.jpg")))
    report.add(load_image(str(tmp_path / "text.jpg")))
    assert report.total == 7 and report.failures == 4
    assert report.counts["ok"] == 3 and report.counts["missing"] == 3 and report.counts["corrupt"] == 1
    assert report.summary() == "images: 3 read, 4 empty (missing 3, corrupt 1)"
    assert str(report) == report.summary()
    assert len(report.examples["missing"]) == 2
    assert "missing0.jpg" in report.examples["missing"][0]
    assert "text.jpg" in report.examples["corrupt"][0]
