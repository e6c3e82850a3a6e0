import gzip
import hashlib
import json
import tarfile
import zlib
from pathlib import Path

import pytest
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands.train import train_model
from fmit_plugin.models.archival import archive_model, load_archive
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory):
    directory = tmp_path_factory.mktemp("archive") / "run"
    config = tiny_config(tiny_bert)
    config["trainer"]["num_epochs"] = 1
    train_model(Params(config), directory)
    return directory


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
