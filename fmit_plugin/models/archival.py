"""
`model.tar.gz`: `config.json`, `vocabulary/` and `weights.th`, everything `evaluate` and
`predict` need, plus `meta.json` (archive format, plugin version, the label set and a SHA-256 of
the weights) so that a mismatched or damaged archive is refused before a model is handed out; and
the run's training record (data fingerprints, config as run, package versions, device) when training
wrote one, which `allennlp model-card` prints.
Pretrained text / image models are reloaded from the name or path in the config; their fine-tuned
weights come from `weights.th`.
"""
import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.common.device import resolve_device
from fmit_plugin.common.file_utils import atomic_write, sigterm_raises
from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.model import Model
from fmit_plugin.version import VERSION

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "weights.th"
VOCABULARY_DIR = "vocabulary"
ARCHIVE_NAME = "model.tar.gz"
META_NAME = "meta.json"
# Written by `train` into the serialization dir; archived inside meta.json as "training_record".
TRAINING_RECORD_NAME = "training_record.json"
# Bumped when the archive layout changes in a way older code cannot read.
ARCHIVE_FORMAT = 1


@dataclass
class Archive:
    model: Model
    config: Params
    dataset_reader: DatasetReader
    validation_dataset_reader: DatasetReader


def archive_model(
    serialization_dir: Union[str, os.PathLike],
    weights: str = "best.th",
    archive_path: Optional[Union[str, os.PathLike]] = None,
) -> Path:
    """Pack `config.json`, `vocabulary/` and `weights` of a serialization dir (atomically)."""
    serialization_dir = Path(serialization_dir)
    archive = Path(archive_path) if archive_path else serialization_dir / ARCHIVE_NAME
    for needed in (CONFIG_NAME, VOCABULARY_DIR, weights):
        if not (serialization_dir / needed).exists():
            raise FileNotFoundError(f"Cannot archive {serialization_dir}: {needed} is missing")

    meta_fields = {
        "archive_format": ARCHIVE_FORMAT,
        "fmit_plugin_version": VERSION,
        "labels": _label_lists(Vocabulary.from_files(serialization_dir / VOCABULARY_DIR)),
        "weights_sha256": _sha256(serialization_dir / weights),
    }
    if (serialization_dir / TRAINING_RECORD_NAME).is_file():
        meta_fields["training_record"] = json.loads((serialization_dir / TRAINING_RECORD_NAME).read_text("utf-8"))
    meta = json.dumps(meta_fields, indent=2).encode("utf-8")

    def write(temp: str) -> None:
        with tarfile.open(temp, "w:gz") as tar:
            tar.add(serialization_dir / CONFIG_NAME, arcname=CONFIG_NAME)
            tar.add(serialization_dir / VOCABULARY_DIR, arcname=VOCABULARY_DIR)
            tar.add(serialization_dir / weights, arcname=WEIGHTS_NAME)
            info = tarfile.TarInfo(META_NAME)
            info.size = len(meta)
            tar.addfile(info, io.BytesIO(meta))

    # Written beside the target and renamed into place: a crash leaves the old archive (or none).
    atomic_write(archive, write)
    logger.info("Archived the model to %s", archive)
    return archive


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _label_lists(vocab: Vocabulary) -> dict[str, list[str]]:
    return {
        namespace: list(vocab.get_index_to_token_vocabulary(namespace).values()) for namespace in vocab.namespaces()
    }


def _check_meta(archive_file: Path, directory: Path, weights: Path, vocab: Vocabulary) -> None:
    """Refuse an archive from a newer format, one whose vocabulary is not the label set its weights
    were trained with, or one whose weights changed since archiving. Archives without `meta.json`
    (older ones, serialization directories) are checked by the weights' shapes only."""
    meta_path = directory / META_NAME
    if not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        archive_format = int(meta["archive_format"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(f"{archive_file}: {META_NAME} is unreadable ({error}): corrupt archive?") from error
    if archive_format > ARCHIVE_FORMAT:
        raise ConfigurationError(
            f"{archive_file} was written by fmit-plugin {meta.get('fmit_plugin_version', '?')} in archive format "
            f"{archive_format}; this version ({VERSION}) reads format {ARCHIVE_FORMAT} or older: upgrade"
        )
    labels = meta.get("labels")
    found = _label_lists(vocab)
    if labels and labels != found:
        raise ConfigurationError(
            f"{archive_file}: vocabulary/ holds {found}, but the weights were trained with {labels} "
            "(a different label set: was the vocabulary replaced?)"
        )
    expected = meta.get("weights_sha256")
    if expected and _sha256(weights) != expected:
        raise ConfigurationError(f"{archive_file}: {WEIGHTS_NAME} does not match its checksum: the archive is corrupt")


# Unpacked, an archive may be at most this many times its packed size (weights barely compress,
# so a real archive is about 1x), and never more than the absolute cap; both can be set by
# environment variable. Below the floor the ratio is not applied (tiny archives compress well).
MAX_UNPACKED_RATIO = 20
MAX_UNPACKED_FLOOR = 100 * 2**20
MAX_UNPACKED_BYTES = 20 * 2**30
_TEMP_PREFIX = "fmit_archive_"


def max_unpacked_bytes(archive_file: Path) -> int:
    """How much an archive may unpack to: `FMIT_ARCHIVE_MAX_UNPACKED_RATIO` (default 20) times its
    size, at least 100 MB, at most `FMIT_ARCHIVE_MAX_UNPACKED_BYTES` (default 20 GiB)."""
    try:
        ratio = float(os.environ.get("FMIT_ARCHIVE_MAX_UNPACKED_RATIO", MAX_UNPACKED_RATIO))
        cap = int(os.environ.get("FMIT_ARCHIVE_MAX_UNPACKED_BYTES", MAX_UNPACKED_BYTES))
    except ValueError as error:
        raise ConfigurationError(f"FMIT_ARCHIVE_MAX_UNPACKED_RATIO / _BYTES must be numbers: {error}") from error
    return min(cap, max(MAX_UNPACKED_FLOOR, int(ratio * archive_file.stat().st_size)))


def _safe_extract(tar: tarfile.TarFile, directory: str, archive_file: Path) -> None:
    """Extract only plain files and folders that stay inside `directory`, member by member, and
    stop before the unpacked size passes `max_unpacked_bytes` (an archive bomb fills no disk)."""
    limit = max_unpacked_bytes(archive_file)
    unpacked = 0
    for member in tar:  # streamed: headers are read as extraction goes, not all first
        unpacked += member.size
        if unpacked > limit:
            raise ConfigurationError(
                f"{archive_file} unpacks to more than {limit:,} bytes ({member.name!r} passes it; the archive is "
                f"{archive_file.stat().st_size:,} bytes): refused as an archive bomb. A real archive this large? "
                "Raise FMIT_ARCHIVE_MAX_UNPACKED_RATIO or FMIT_ARCHIVE_MAX_UNPACKED_BYTES"
            )
        if hasattr(tarfile, "data_filter"):
            tar.extract(member, directory, filter="data")
            continue
        # Pythons before 3.11.4 have no extraction filters: check the members ourselves.
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise ConfigurationError(f"Refusing to extract {member.name!r}: not a plain file inside the archive")
        tar.extract(member, directory)


def _remove_stale_temp_dirs() -> None:
    """Temporary folders of loads whose process died (SIGKILL leaves them): the pid is in the name."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*_*"):
        pid = folder.name[len(_TEMP_PREFIX):].split("_", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def _named_after_archive(error: Exception, archive_file: Path, temp: str) -> ConfigurationError:
    """A config error from the unpacked copy, naming the archive instead of the temporary folder."""
    message = str(error).replace(str(Path(temp) / CONFIG_NAME), f"{archive_file}!{CONFIG_NAME}").replace(
        temp, str(archive_file))
    if str(archive_file) not in message:
        message = f"{archive_file}: {message}"
    return ConfigurationError(message)


def _feature_store_settings(config: Params, feature_store: Optional[Union[str, os.PathLike]]) -> None:
    """The archive's feature store is read-only (new features stay in memory) unless the user names
    one: an archive's `store_path`, relative or absolute, must not make evaluate / predict write there."""
    for key in ("dataset_reader", "validation_dataset_reader"):
        reader = config.get(key, None)
        visual_objects = reader.get("visual_objects", None) if isinstance(reader, Params) else None
        if not isinstance(visual_objects, Params):
            continue
        if feature_store is not None:
            visual_objects["store_path"] = str(feature_store)
            visual_objects.pop("store_read_only", None)
        elif visual_objects.get("store_path", None):
            visual_objects["store_read_only"] = True


def load_archive(
    archive_file: Union[str, os.PathLike],
    cuda_device: Optional[Union[int, str]] = -1,
    overrides: Union[str, dict] = "",
    feature_store: Optional[Union[str, os.PathLike]] = None,
) -> Archive:
    """Rebuild the model of an archive (or of a serialization directory) with its trained weights.
    Nothing is written outside a temporary folder: the config's feature store is opened read-only
    and new visual features are kept in memory, unless `feature_store` names a store to use."""
    archive_file = Path(archive_file)
    if not archive_file.exists():
        raise ConfigurationError(f"Archive not found: {archive_file}")
    _remove_stale_temp_dirs()
    with sigterm_raises():
        return _load_archive(archive_file, cuda_device, overrides, feature_store)


def _load_archive(
    archive_file: Path,
    cuda_device: Optional[Union[int, str]],
    overrides: Union[str, dict],
    feature_store: Optional[Union[str, os.PathLike]],
) -> Archive:
    from fmit_plugin.common.params import check_config_types, load_config

    with tempfile.TemporaryDirectory(prefix=f"{_TEMP_PREFIX}{os.getpid()}_") as temp:
        if archive_file.is_dir():
            directory = archive_file
            weights = directory / (WEIGHTS_NAME if (directory / WEIGHTS_NAME).exists() else "best.th")
        else:
            try:
                with tarfile.open(archive_file, "r:gz") as tar:
                    _safe_extract(tar, temp, archive_file)
                    # Read on to the end of the gzip stream: only there are its CRC and length
                    # checked, so an archive cut short after its last member is caught too.
                    assert tar.fileobj is not None
                    while tar.fileobj.read(1 << 20):
                        pass
            except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
                raise ConfigurationError(
                    f"{archive_file} is not a readable model archive (corrupt or truncated?): {error}"
                ) from error
            directory, weights = Path(temp), Path(temp) / WEIGHTS_NAME
        for needed in (directory / CONFIG_NAME, directory / VOCABULARY_DIR, weights):
            if not needed.exists():
                raise ConfigurationError(f"{archive_file} has no {needed.name}: not a model archive")
        try:
            config = load_config(directory / CONFIG_NAME, overrides)
            for key, cls in (("model", Model), ("dataset_reader", DatasetReader),
                             ("validation_dataset_reader", DatasetReader)):
                check_config_types(cls, config.get(key, None), key)
        except ConfigurationError as error:
            raise _named_after_archive(error, archive_file, temp) from error
        _feature_store_settings(config, feature_store)
        vocab = Vocabulary.from_files(directory / VOCABULARY_DIR)
        _check_meta(archive_file, directory, weights, vocab)
        try:
            state = torch.load(weights, map_location="cpu")
        except Exception as error:  # noqa: BLE001 - pickle, zip and torch errors alike mean a bad file
            raise ConfigurationError(
                f"{archive_file}: {weights.name} cannot be read (corrupt, truncated or not PyTorch weights): "
                f"{type(error).__name__}: {str(error)[:300]}"
            ) from error
    if not isinstance(state, dict):
        raise ConfigurationError(f"{archive_file}: {weights.name} holds a {type(state).__name__}, not a state dict")
    try:
        model = Model.from_params(config.get("model").duplicate(), vocab=vocab)
    except ConfigurationError as error:
        raise ConfigurationError(
            f"{archive_file}: its config does not build a model with this fmit-plugin ({VERSION}; "
            f"archive from another version?): {error}"
        ) from error
    try:
        # strict: every weight must be there and fit; the half-filled model is dropped on failure.
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigurationError(
            f"The weights in {archive_file} do not fit the model its config builds "
            f"(different label set or model version?): {str(error)[:500]}"
        ) from error
    model.to(resolve_device(cuda_device))
    model.eval()
    try:
        reader = DatasetReader.from_params(config.get("dataset_reader").duplicate())
        validation_params = config.get("validation_dataset_reader", None)
        validation_reader = (
            DatasetReader.from_params(validation_params.duplicate()) if validation_params is not None else reader
        )
    except ConfigurationError as error:
        raise ConfigurationError(f"{archive_file}: its dataset reader cannot be built: {error}") from error
    return Archive(model, config, reader, validation_reader)


def read_archive_meta(archive_file: Union[str, os.PathLike]) -> dict:
    """The `meta.json` of an archive (without extracting the rest); for a serialization directory,
    what archiving it would record of it (its training record). `{}` for an archive without one."""
    archive_file = Path(archive_file)
    if archive_file.is_dir():
        record = archive_file / TRAINING_RECORD_NAME
        return {"training_record": json.loads(record.read_text("utf-8"))} if record.is_file() else {}
    if not archive_file.is_file():
        raise ConfigurationError(f"Archive not found: {archive_file}")
    try:
        with tarfile.open(archive_file, "r:gz") as tar:
            try:
                member = tar.extractfile(META_NAME)
            except KeyError:
                return {}
            if member is None:
                raise ConfigurationError(f"{archive_file}: {META_NAME} is not a file: corrupt archive?")
            return json.loads(member.read().decode("utf-8"))
    except (tarfile.TarError, EOFError, zlib.error, ValueError) as error:
        raise ConfigurationError(
            f"{archive_file} is not a readable model archive (corrupt or truncated?): {error}"
        ) from error
