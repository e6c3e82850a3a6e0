"""The `DatasetReader` registry: files -> `TaggingInstance`s."""
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from tango.common import Registrable
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.vision.regions import Region

logger = logging.getLogger(__name__)


class DatasetReader(Registrable):
    """
    Reads a file into `TaggingInstance`s (`read`) and builds one instance from raw input
    (`text_to_instance`, used by the predictor).

    # Parameters

    max_instances : `int`, optional (default = `None`)
        Stop after this many instances per file.
    """

    def __init__(self, max_instances: Optional[int] = None) -> None:
        if max_instances is not None and max_instances < 1:
            raise ConfigurationError(f"max_instances must be positive, got {max_instances}")
        self.max_instances = max_instances

    def read(self, file_path: str) -> list[TaggingInstance]:
        """All instances of `file_path` in a list (training and evaluation need them all)."""
        instances = list(self._limited(self._checked_path(file_path)))
        logger.info("Read %d instances from %s", len(instances), file_path)
        return instances

    def stream(self, file_path: str) -> Iterator[TaggingInstance]:
        """The instances of `file_path` one at a time, read lazily: `predict --use-dataset-reader`
        goes through files of any size in constant memory. Same instances, same order as `read`."""
        return self._limited(self._checked_path(file_path))

    @staticmethod
    def _checked_path(file_path: str) -> Path:
        path = Path(file_path)
        if not path.is_file():
            raise FileNotFoundError(f"Data file not found: {path}")
        return path

    def _limited(self, path: Path) -> Iterator[TaggingInstance]:
        for count, instance in enumerate(self._read(path), start=1):
            yield instance
            if self.max_instances is not None and count >= self.max_instances:
                return

    def _read(self, file_path: Path) -> Iterator[TaggingInstance]:
        raise NotImplementedError

    def text_to_instance(
        self,
        words: list[str],
        tags: Optional[list[str]] = None,
        image: Optional[str] = None,
        image_bytes: Optional[bytes] = None,
        regions: Optional[list[Region]] = None,
    ) -> TaggingInstance:
        """`image`: an image id or path; `image_bytes`: the image itself, in memory (then `image` only
        names it); `regions`: groundings given with the tweet, used instead of the reader's grounder."""
        raise NotImplementedError
