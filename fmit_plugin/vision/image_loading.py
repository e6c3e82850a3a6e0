"""
Robust image loading for tweets: every file gives an RGB image, and a bad file gives the paper's empty image.

Tweet images are scraped, so some are missing, truncated, not images at all, or hostile (decompression
bombs). `load_image` never raises for such a file: it returns the uniform empty image with a status saying
why, and `ImageLoadReport` turns many of those statuses into one log line.
"""
import hashlib
import io
import os
import re
import stat
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from PIL import Image, ImageOps, UnidentifiedImageError

EMPTY_IMAGE_SIZE = (224, 224)
# Mid grey: the value that input normalisation maps closest to zero, so the empty image carries no signal.
EMPTY_IMAGE_COLOR = (128, 128, 128)
# Every failure shares this digest, so all empty images share one feature-cache key.
EMPTY_IMAGE_SHA256 = hashlib.sha256(b"fmit-empty-image").hexdigest()

# A side shorter than this, or a long side more than this many times the short one, is "degenerate":
# such strips (tracking pixels, spacer GIFs, 1 x 50000 banners) hold nothing a backbone can use, and
# resizing them to a square input blows single pixels up into bars.
MIN_IMAGE_SIDE = 2
MAX_ASPECT_RATIO = 100.0

# Bytes an image file may hold before it is refused unread: a tweet photo is a few hundred KB, and
# reading a multi-GB file "named .jpg" would hold it all in memory before Pillow could refuse it.
MAX_IMAGE_BYTES = 50_000_000

# Statuses, in the order a report lists them when counts tie.
STATUSES = ("ok", "missing", "not_a_file", "url", "empty_file", "too_large", "degenerate", "corrupt")

# "http://...", "s3://...", "file://...": a scheme and "//"; images are read from local files only.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

# Grey-scale modes holding 16 or 32 bits per pixel; `convert("RGB")` would clip them to white.
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def empty_image(size: tuple[int, int] = EMPTY_IMAGE_SIZE) -> Image.Image:
    """
    The paper's stand-in for a tweet without a usable image: it uses a uniform empty image for missing
    images. A fresh image each call, so a caller may modify it.
    """
    return Image.new("RGB", size, EMPTY_IMAGE_COLOR)


@dataclass
class LoadedImage:
    """
    The outcome of `load_image`.

    # Parameters

    image : `PIL.Image.Image`
        RGB, EXIF orientation applied; the empty image when `status != "ok"`.
    status : `str`
        `"ok"` or why the empty image was used: `"missing"`, `"not_a_file"` (a folder, FIFO,
        socket or device), `"url"`, `"empty_file"` (0 bytes by `stat`, as `/proc` files are),
        `"too_large"` (bytes or pixels), `"degenerate"` or `"corrupt"`.
    message : `str`
        Human readable, names the path.
    sha256 : `str`
        Hex digest of the file's bytes (a feature-cache key); `EMPTY_IMAGE_SHA256` for every failure.
    path : `str`, optional
        The path asked for.
    """

    image: Image.Image
    status: str
    message: str
    sha256: str
    path: Optional[str]

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def degenerate_reason(width: int, height: int) -> Optional[str]:
    """Why an image of this size is degenerate (see `MIN_IMAGE_SIDE`, `MAX_ASPECT_RATIO`), or `None`."""
    short, long = min(width, height), max(width, height)
    if short < MIN_IMAGE_SIDE:
        return f"{width}x{height} has a side under {MIN_IMAGE_SIDE} px"
    if long / short > MAX_ASPECT_RATIO:
        return f"{width}x{height} has an aspect ratio over {MAX_ASPECT_RATIO:g}"
    return None


def _failure(path: Optional[str], status: str, message: str) -> LoadedImage:
    return LoadedImage(empty_image(), status, message, EMPTY_IMAGE_SHA256, path)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _WIDE_GREY_MODES:
        # 16-bit grey (e.g. medical or scanner PNGs): scale to 8 bits instead of clipping at 255.
        image = image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    return image.convert("RGB")


def is_url(path: str) -> bool:
    """Whether `path` is a URL ("https://...") rather than a file name."""
    return _URL.match(path) is not None


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def _refused_by_stat(path: Optional[str], max_bytes: int = MAX_IMAGE_BYTES) -> Optional[LoadedImage]:
    """
    What `load_image` would refuse about `path` from `stat` alone, without opening it: the failure,
    or `None` when the file is worth reading. Only regular files of 1 to `max_bytes` bytes pass:
    reading a FIFO would block forever, a device (`/dev/zero`) never ends, and `/proc` files stat
    as 0 bytes whatever they would produce.
    """
    if path is None:
        return _failure(None, "missing", "no image path given")
    path = os.fspath(path)
    if is_url(path):
        return _failure(path, "url", f"{path}: a URL; images are read from local files (download it first)")
    try:
        # stat follows symlinks: a dangling link is "missing", a symlink loop raises ELOOP.
        info = os.stat(path)
    except FileNotFoundError:
        return _failure(path, "missing", f"{path}: no such file")
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        return _failure(path, "not_a_file", f"{path}: cannot be opened: {error}")
    if not stat.S_ISREG(info.st_mode):
        return _failure(path, "not_a_file", f"{path}: {_file_kind(info.st_mode)}, not a regular file")
    if info.st_size == 0:
        return _failure(path, "empty_file", f"{path}: 0 bytes (an empty file, or a virtual one such as /proc's)")
    if info.st_size > max_bytes:
        return _failure(path, "too_large", f"{path}: {info.st_size} bytes > max_bytes {max_bytes}")
    return None


def load_image(path: Optional[str], max_pixels: int = 89_478_485, max_bytes: int = MAX_IMAGE_BYTES) -> LoadedImage:
    """
    Reads `path` as an RGB image; never raises for a bad file (see `LoadedImage.status`).

    `_refused_by_stat` vets the path before a byte is read. The bytes are then read once (at most
    `max_bytes`, should the file grow meanwhile), hashed and decoded from memory, so the file cannot
    change between the two. Truncated files are errors ("corrupt"): `ImageFile.LOAD_TRUNCATED_IMAGES`
    is left alone.

    # Parameters

    path : `str`, optional
        The image file; `None` means the tweet has no image ("missing").
    max_pixels : `int`, optional (default = `89_478_485`, Pillow's own warning limit)
        Images with more pixels are "too_large"; the size comes from the header, before decoding.
        Pillow refuses images over twice its `Image.MAX_IMAGE_PIXELS` whatever this says.
    max_bytes : `int`, optional (default = `MAX_IMAGE_BYTES`, 50 MB)
        Larger files are "too_large", refused from `stat` without being opened.
    """
    refused = _refused_by_stat(path, max_bytes)
    if refused is not None:
        return refused
    assert path is not None
    path = os.fspath(path)
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it cannot block.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        return _failure(path, "not_a_file", f"{path}: cannot be read: {error}")
    if not data:
        return _failure(path, "empty_file", f"{path}: file is empty (0 bytes)")
    if len(data) > max_bytes:
        return _failure(path, "too_large", f"{path}: over max_bytes {max_bytes} bytes")
    return _decode(path, data, max_pixels)


def load_image_bytes(data: bytes, name: Optional[str] = None, max_pixels: int = 89_478_485) -> LoadedImage:
    """
    As `load_image`, for an image already in memory (an upload, a `PIL.Image` the caller encoded):
    nothing is written to disk, and the result is keyed by the SHA-256 of `data` as a file's is, so
    the same image gives the same features whether it came as a file or as bytes.

    # Parameters

    data : `bytes`
        The encoded image (PNG, JPEG...).
    name : `str`, optional
        What messages call the image (default "image bytes").
    max_pixels : `int`, optional (default = `89_478_485`)
    """
    shown = name or "image bytes"
    if not data:
        return _failure(name, "empty_file", f"{shown}: no bytes (0 bytes)")
    return _decode(shown, bytes(data), max_pixels)


def image_header_pixels(data: bytes) -> Optional[tuple[str, int]]:
    """("WIDTHxHEIGHT", pixels) of encoded image `data`, read from its header with nothing decoded; `None`
    when Pillow cannot identify it. For refusing decompression bombs before any work is done."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
                return f"{width}x{height}", width * height
    except Image.DecompressionBombError as error:
        # Pillow refuses over twice MAX_IMAGE_PIXELS before handing out the size; its message has the count.
        match = re.search(r"\((\d+) pixels\)", str(error))
        pixels = int(match.group(1)) if match else 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
        return f"{pixels} pixels", pixels
    except Exception:  # noqa: BLE001 - anything Pillow cannot read is "not identified"
        return None


def _decode(path: str, data: bytes, max_pixels: int) -> LoadedImage:
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS: make that an error unless the caller allows more pixels,
        # in which case the header check below is the limit.
        if max_pixels <= (Image.MAX_IMAGE_PIXELS or 0):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        else:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size  # from the header: nothing decoded yet
                if width * height > max_pixels:
                    return _failure(
                        path, "too_large", f"{path}: {width}x{height} = {width * height} pixels > {max_pixels}"
                    )
                reason = degenerate_reason(width, height)
                if reason is not None:
                    return _failure(path, "degenerate", f"{path}: degenerate image: {reason}")
                opened.load()  # forces decoding, so truncation and bad data fail here
                image = _to_rgb(_exif_transposed(opened))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            return _failure(path, "too_large", f"{path}: {error}")
        except UnidentifiedImageError:
            return _failure(path, "corrupt", f"{path}: not an image Pillow can identify")
        except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, struct.error...
            return _failure(path, "corrupt", f"{path}: cannot be decoded: {type(error).__name__}: {error}")
    digest = hashlib.sha256(data).hexdigest()
    return LoadedImage(image, "ok", f"{path}: {image.width}x{image.height}", digest, path)


def _exif_transposed(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should cost the rotation, not the image
        return image


class ImageLoadReport:
    """
    Counts `load_image` outcomes over many loads, so a caller logs one summary line instead of a
    warning per image.

    # Parameters

    max_examples : `int`, optional (default = `3`)
        How many messages to keep per status in `examples`.
    """

    def __init__(self, max_examples: int = 3) -> None:
        self.max_examples = max_examples
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, loaded: LoadedImage) -> None:
        self.count(loaded.status, loaded.message)

    def count(self, status: str, message: str) -> None:
        """One outcome, from its status and message (`VisualObjects` keeps both)."""
        self.counts[status] += 1
        examples = self.examples.setdefault(status, [])
        if len(examples) < self.max_examples:
            examples.append(message)

    def update(self, other: "ImageLoadReport") -> None:
        """Adds the counts (and examples, up to `max_examples`) of another report."""
        self.counts.update(other.counts)
        for status, messages in other.examples.items():
            examples = self.examples.setdefault(status, [])
            examples.extend(messages[: max(self.max_examples - len(examples), 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failures(self) -> int:
        return self.total - self.counts["ok"]

    def summary(self) -> str:
        """One line, e.g. "images: 120 read, 7 empty (missing 5, corrupt 1, too_large 1)"."""
        line = f"images: {self.counts['ok']} read, {self.failures} empty"
        failed = [(status, count) for status, count in self.counts.items() if status != "ok" and count]
        if failed:
            order = {status: index for index, status in enumerate(STATUSES)}
            failed.sort(key=lambda item: (-item[1], order.get(item[0], len(order)), item[0]))
            line += " (" + ", ".join(f"{status} {count}" for status, count in failed) + ")"
        return line

    def __str__(self) -> str:
        return self.summary()
