import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import pytest
from tango.common.exceptions import ConfigurationError

from fmit_plugin.models.archival import archive_model, load_archive, max_unpacked_bytes
from fmit_plugin.vision.feature_store import FeatureStore
from tests.conftest import train_tiny


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    return train_tiny(tiny_bert, tmp_path_factory.mktemp("archive") / "run", num_epochs=1)


def test_archive_holds_config_vocabulary_and_weights(run):
    with tarfile.open(run / "model.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"config.json", "weights.th", "vocabulary/labels.txt"} <= names
    assert load_archive(run).model.vocab == load_archive(run / "model.tar.gz").model.vocab


def test_truncated_or_foreign_archives_are_clear_errors(run, tmp_path):
    data = (run / "model.tar.gz").read_bytes()
    (tmp_path / "truncated.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigurationError, match="corrupt or truncated"):
        load_archive(tmp_path / "truncated.tar.gz")
    with tarfile.open(tmp_path / "foreign.tar.gz", "w:gz") as tar:
        tar.add(run / "config.json", arcname="config.json")
    with pytest.raises(ConfigurationError, match="not a model archive"):
        load_archive(tmp_path / "foreign.tar.gz")
    with pytest.raises(ConfigurationError, match="not found"):
        load_archive(tmp_path / "nothing.tar.gz")


def test_archive_with_another_label_set_is_rejected(run, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / "vocabulary" / "labels.txt").write_text("O\nB-PER\nI-PER\n")
    archive_model(other)
    with pytest.raises(ConfigurationError, match="different label set"):
        load_archive(other / "model.tar.gz")


def test_archiving_needs_a_complete_serialization_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        archive_model(tmp_path)
    assert not (tmp_path / "model.tar.gz").exists()


# ------------------------------------------------------------------ bad archives (issue 8)

BAD_ARCHIVES = Path(__file__).parents[1] / "fixtures" / "bad_input" / "archives"


@pytest.fixture
def small_run(tmp_path):
    """A serialization directory of an untrained tiny tagger, archived."""
    from tests.bad_input_helpers import write_run

    run = write_run(tmp_path / "small_run", {"type": "test_hashing"})
    archive_model(run)
    return run


def _repack(archive: Path, target: Path, change) -> Path:
    """Unpack `archive`, let `change(folder)` edit it, pack it again as `target`."""
    folder = target.parent / (target.name + ".d")
    with tarfile.open(archive) as tar:
        tar.extractall(folder)
    change(folder)
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return target


@pytest.mark.parametrize("name", ["not_gzip.tar.gz", "empty.tar.gz"])
def test_files_that_are_not_archives_are_clear_errors(name):
    with pytest.raises(ConfigurationError, match=r"not a readable model archive \(corrupt or truncated\?\)"):
        load_archive(BAD_ARCHIVES / name)


def test_archive_records_format_labels_and_weights_checksum(small_run):
    with tarfile.open(small_run / "model.tar.gz") as tar:
        meta = json.load(tar.extractfile("meta.json"))
    assert meta["archive_format"] == 1
    assert meta["labels"] == {"labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}
    assert meta["weights_sha256"] == hashlib.sha256((small_run / "best.th").read_bytes()).hexdigest()
    assert load_archive(small_run / "model.tar.gz").model.vocab.get_vocab_size() == 5


def test_every_truncation_is_a_clear_error_never_a_model(small_run, tmp_path):
    data = (small_run / "model.tar.gz").read_bytes()
    for cut in sorted({1, 10, 100, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1}):
        path = tmp_path / f"cut{cut}.tar.gz"
        path.write_bytes(data[:cut])
        with pytest.raises(ConfigurationError, match=str(path)):
            load_archive(path)


def _inflates_to(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


def test_flipped_bytes_are_clear_errors_never_a_model(small_run, tmp_path):
    data = (small_run / "model.tar.gz").read_bytes()
    content = gzip.decompress(data)
    path = tmp_path / "flipped.tar.gz"
    checked = 0
    # from the end of the gzip header (its last field, the original file name, is not checked)
    for position in range(data.index(b"\x00", 10) + 1, len(data), 97):
        damaged = bytearray(data)
        damaged[position] ^= 0x5A
        if _inflates_to(bytes(damaged)) == content:
            continue  # only bits deflate ignores (the padding of its last byte) changed: not damage
        path.write_bytes(bytes(damaged))
        with pytest.raises(ConfigurationError, match=str(path)):
            load_archive(path)
        checked += 1
    assert checked >= 10


def test_swapped_vocabulary_of_the_same_size_is_refused(small_run, tmp_path):
    def swap(folder):
        (folder / "vocabulary" / "labels.txt").write_text("O\nB-LOC\nI-LOC\nB-PER\nI-PER\n")

    swapped = _repack(small_run / "model.tar.gz", tmp_path / "swapped.tar.gz", swap)
    with pytest.raises(ConfigurationError, match="different label set"):
        load_archive(swapped)


def test_damaged_weights_are_refused(small_run, tmp_path):
    def flip(folder):
        data = bytearray((folder / "weights.th").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / "weights.th").write_bytes(bytes(data))

    with pytest.raises(ConfigurationError, match="does not match its checksum"):
        load_archive(_repack(small_run / "model.tar.gz", tmp_path / "flipped.tar.gz", flip))

    def garbage_without_meta(folder):
        (folder / "weights.th").write_bytes(b"not a torch file")
        (folder / "meta.json").unlink()

    with pytest.raises(ConfigurationError, match="weights.th cannot be read"):
        load_archive(_repack(small_run / "model.tar.gz", tmp_path / "garbage.tar.gz", garbage_without_meta))


def test_archives_from_other_versions_are_clear_errors(small_run, tmp_path):
    def newer(folder):
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "archive_format": 99, "fmit_plugin_version": "9.0"}))

    with pytest.raises(ConfigurationError, match="archive format 99.*upgrade"):
        load_archive(_repack(small_run / "model.tar.gz", tmp_path / "newer.tar.gz", newer))

    def unknown_key(folder):
        config = json.loads((folder / "config.json").read_text())
        config["model"]["attention_temperature"] = 2.0
        (folder / "config.json").write_text(json.dumps(config))

    with pytest.raises(ConfigurationError, match="does not build a model.*attention_temperature"):
        load_archive(_repack(small_run / "model.tar.gz", tmp_path / "other.tar.gz", unknown_key))


def test_archive_writing_is_atomic(small_run, monkeypatch):
    archive = small_run / "model.tar.gz"
    before = archive.read_bytes()
    calls = {"n": 0}
    original = tarfile.TarFile.add

    def failing_add(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "add", failing_add)
    with pytest.raises(OSError, match="disk full"):
        archive_model(small_run)
    assert archive.read_bytes() == before  # the old archive is untouched
    assert sorted(p.name for p in small_run.iterdir()) == ["best.th", "config.json", "model.tar.gz", "vocabulary"]


# ------------------------------------------------------------------ issue 16: bounded, self-contained loading
def test_an_archive_that_unpacks_past_the_limit_is_refused(small_run, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("FMIT_ARCHIVE_MAX_UNPACKED_BYTES", "2000000")

    def add_bomb(folder: Path) -> None:
        (folder / "zeros.bin").write_bytes(bytes(5_000_000))  # compresses to a few kilobytes

    bomb = _repack(small_run / "model.tar.gz", tmp_path / "bomb.tar.gz", add_bomb)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ConfigurationError, match=r"bomb\.tar\.gz unpacks to more than 2,000,000 bytes \('zeros\.bin'"):
        load_archive(bomb)
    assert not list((tmp_path / "tmp").iterdir())  # the partial extraction went with its folder
    monkeypatch.setenv("FMIT_ARCHIVE_MAX_UNPACKED_BYTES", "20000000")  # configurable: a larger cap admits it
    assert load_archive(bomb).model is not None


def test_the_default_unpack_limit_is_twenty_times_the_archive_within_floor_and_cap(tmp_path, monkeypatch):
    archive = tmp_path / "a.tar.gz"
    with open(archive, "wb") as handle:
        handle.truncate(14 * 2**20)  # sparse: only the size matters
    assert max_unpacked_bytes(archive) == 20 * 14 * 2**20  # 280 MB: a 3 GB bomb is stopped there
    with open(archive, "wb") as handle:
        handle.truncate(1000)
    assert max_unpacked_bytes(archive) == 100 * 2**20  # small archives may compress well
    monkeypatch.setenv("FMIT_ARCHIVE_MAX_UNPACKED_RATIO", "2")
    monkeypatch.setenv("FMIT_ARCHIVE_MAX_UNPACKED_BYTES", "50")
    assert max_unpacked_bytes(archive) == 50


def _with_config(run: Path, target: Path, edit) -> Path:
    def change(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))

    return _repack(run / "model.tar.gz", target, change)


def test_a_config_error_inside_an_archive_names_the_archive(small_run, tmp_path):
    archive = _with_config(small_run, tmp_path / "typed.tar.gz", lambda c: c["model"].update(dropout="a"))
    with pytest.raises(ConfigurationError) as info:
        load_archive(archive)
    assert str(archive) in str(info.value) and 'model.dropout: expected a number or null, got "a"' in str(info.value)
    assert "fmit_archive_" not in str(info.value)

    def unparsable(folder: Path) -> None:
        (folder / "config.json").write_text("{")

    broken = _repack(small_run / "model.tar.gz", tmp_path / "broken.tar.gz", unparsable)
    with pytest.raises(ConfigurationError, match=rf"{broken}!config.json") as info:
        load_archive(broken)
    assert "fmit_archive_" not in str(info.value)


SIGTERM_DURING_LOAD = """
import sys, time
from fmit_plugin.models import archival
def slow_check(*args):
    print(args[1], flush=True)  # the temporary folder
    time.sleep(120)
archival._check_meta = slow_check
archival.load_archive(sys.argv[1])
"""


def test_sigterm_while_loading_removes_the_temporary_folder(small_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "TMPDIR": str(tmp_path)}
    loader = subprocess.Popen([sys.executable, "-c", SIGTERM_DURING_LOAD, str(small_run / "model.tar.gz")],
                              stdout=subprocess.PIPE, text=True, env=env)
    assert loader.stdout is not None
    folder = Path(loader.stdout.readline().strip())
    assert folder.name.startswith(f"fmit_archive_{loader.pid}_") and folder.is_dir()
    loader.send_signal(signal.SIGTERM)
    assert loader.wait(timeout=60) == 128 + signal.SIGTERM
    assert not folder.exists()


def test_folders_of_dead_loaders_are_removed_at_the_next_load(small_run, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"fmit_archive_{dead.pid}_abc"
    alive = tmp_path / f"fmit_archive_{os.getppid()}_def"
    unknown = tmp_path / "fmit_archive_xyz"  # no pid in the name: whose it is cannot be told
    for folder in (stale, alive, unknown):
        (folder / "vocabulary").mkdir(parents=True)
    load_archive(small_run / "model.tar.gz")
    assert not stale.exists() and alive.exists() and unknown.exists()


@pytest.fixture
def visual_run(tmp_path):
    """An archive whose reader extracts visual objects into a store at an absolute and a relative path."""
    from PIL import Image

    from tests.bad_input_helpers import write_run

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (100 * i, 50, 50)).save(images / f"{i}.jpg")
    (tmp_path / "data.txt").write_text("IMGID:0\nObama\tB-PER\n\nIMGID:1\nParis\tB-LOC\n")
    run = write_run(tmp_path / "visual_run", {"type": "test_hashing"})
    config = json.loads((run / "config.json").read_text())
    config["dataset_reader"] = {"type": "twitter_mner", "image_dir": str(images),
                                "visual_objects": {"backbone": {"type": "efficientnet_lite"},
                                                   "store_path": str(tmp_path / "elsewhere" / "deep" / "store.sqlite")}}
    config["validation_dataset_reader"] = json.loads(json.dumps(config["dataset_reader"]))
    config["validation_dataset_reader"]["visual_objects"]["store_path"] = "runs/visual_features.sqlite"
    (run / "config.json").write_text(json.dumps(config))
    archive_model(run)
    return run / "model.tar.gz"


def test_loading_an_archive_writes_no_feature_store_unless_asked(visual_run, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    archive = load_archive(visual_run)
    for reader in (archive.dataset_reader, archive.validation_dataset_reader):
        assert len(reader.read(str(tmp_path / "data.txt"))) == 2  # features computed, kept in memory
    assert not (tmp_path / "elsewhere").exists() and not list(cwd.iterdir())

    mine = tmp_path / "mine.sqlite"  # a store the user names gets the new features
    writer = load_archive(visual_run, feature_store=mine).dataset_reader
    writer.read(str(tmp_path / "data.txt"))
    # The store is in WAL mode: its file settles when the writing connection closes (a checkpoint),
    # which garbage collection would otherwise do at an arbitrary later moment, inside the check below.
    writer.visual_objects.store.close()
    assert len(FeatureStore(mine, read_only=True)) == 2
    before = mine.read_bytes()

    # An existing store of the config is read, read-only: every tweet a hit, the file untouched.
    reader = load_archive(visual_run, overrides={"dataset_reader.visual_objects.store_path": str(mine)}).dataset_reader
    reader.read(str(tmp_path / "data.txt"))
    assert reader.last_visual_summary is not None and reader.last_visual_summary.cache_hits == 2
    assert mine.read_bytes() == before
    assert not (tmp_path / "elsewhere").exists() and not list(cwd.iterdir())
