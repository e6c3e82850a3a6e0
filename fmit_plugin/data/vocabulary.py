"""
The label vocabulary. Word pieces come from each text model's own tokenizer, so the only
vocabulary the plugin keeps is for tags (AllenNLP's "labels" namespace), saved as one file per
namespace in `vocabulary/` of the serialization directory and the archive.
"""
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Optional, Union

from tango.common import FromParams
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.instance import TaggingInstance


class UnknownLabelError(ValueError, KeyError):
    """A label outside a vocabulary namespace. A `ValueError` (a data problem: the CLI prints it as one
    line) and, for callers that look labels up like a dict, a `KeyError`."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Vocabulary(FromParams):
    """
    Index <-> label maps per namespace ("labels" for BIO tags, "boundary_labels" if a model adds
    its own). Namespaces have no padding or OOV entry: an unknown label is an error.
    """

    def __init__(self, namespaces: Optional[dict[str, list[str]]] = None) -> None:
        self._index_to_token: dict[str, list[str]] = {}
        self._token_to_index: dict[str, dict[str, int]] = {}
        for namespace, tokens in (namespaces or {}).items():
            self.add_namespace(namespace, tokens)

    def add_namespace(self, namespace: str, tokens: Iterable[str]) -> None:
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            raise ConfigurationError(f"Duplicate labels in namespace '{namespace}': {tokens}")
        self._index_to_token[namespace] = tokens
        self._token_to_index[namespace] = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def from_instances(
        cls, instances: Iterable[TaggingInstance], label_namespace: str = "labels"
    ) -> "Vocabulary":
        """Labels by descending frequency (ties by name), as AllenNLP orders them; "O" always first."""
        counts: Counter = Counter()
        for instance in instances:
            if instance.tags is not None:
                counts.update(instance.tags)
        if not counts:
            raise ConfigurationError("No gold tags in the training data: cannot build a label vocabulary")
        labels = sorted(counts, key=lambda label: (label != "O", -counts[label], label))
        return cls({label_namespace: labels})

    def get_vocab_size(self, namespace: str = "labels") -> int:
        return len(self._namespace(namespace))

    def get_token_index(self, token: str, namespace: str = "labels") -> int:
        try:
            return self._token_to_index[namespace][token]
        except KeyError:
            raise UnknownLabelError(
                f"Label '{token}' is not in the vocabulary namespace '{namespace}' "
                f"(known: {', '.join(self._namespace(namespace))})"
            ) from None

    def check_labels(
        self,
        instances: Iterable[TaggingInstance],
        namespace: str = "labels",
        hint: str = "the data uses another label set than the one the model was trained on",
    ) -> None:
        """
        Raise `UnknownLabelError` for the first gold tag outside `namespace`, naming where it comes
        from (the token's own "file:line" when the reader kept `token_lines`, else the tweet's), the
        word and the label, then `hint`. Evaluation calls this before computing anything: data with
        a type the model never saw (`B-EVENT`, or `OTHER` where the model learnt `MISC`) cannot be
        scored, and mapping it to `O` would change the score silently.
        """
        known = self._token_to_index.get(namespace)
        if known is None:
            self._namespace(namespace)  # raises, naming the namespaces there are
            return
        for instance in instances:
            for position, tag in enumerate(instance.tags or []):
                if tag not in known:
                    source = instance.metadata.get("source", "input")
                    token_lines = instance.metadata.get("token_lines")
                    if token_lines is not None and "file" in instance.metadata:
                        source = f"{instance.metadata['file']}:{token_lines[position]}"  # the token's own line
                    raise UnknownLabelError(
                        f"{source}: word {position + 1} ({instance.words[position]!r}) has label '{tag}', which is "
                        f"not among the labels ({', '.join(self._index_to_token[namespace])}); {hint}"
                    )

    def get_token_from_index(self, index: int, namespace: str = "labels") -> str:
        return self._namespace(namespace)[index]

    def get_index_to_token_vocabulary(self, namespace: str = "labels") -> dict[int, str]:
        return dict(enumerate(self._namespace(namespace)))

    def get_token_to_index_vocabulary(self, namespace: str = "labels") -> dict[str, int]:
        self._namespace(namespace)
        return dict(self._token_to_index[namespace])

    def namespaces(self) -> list[str]:
        return list(self._index_to_token)

    def _namespace(self, namespace: str) -> list[str]:
        if namespace not in self._index_to_token:
            raise ConfigurationError(
                f"Vocabulary has no namespace '{namespace}' (has: {', '.join(self._index_to_token)})"
            )
        return self._index_to_token[namespace]

    def save_to_files(self, directory: Union[str, os.PathLike]) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for namespace, tokens in self._index_to_token.items():
            (directory / f"{namespace}.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")

    @classmethod
    def from_files(cls, directory: Union[str, os.PathLike]) -> "Vocabulary":
        directory = Path(directory)
        files = sorted(directory.glob("*.txt"))
        if not files:
            raise ConfigurationError(f"No vocabulary files (*.txt) in {directory}")
        return cls({f.stem: f.read_text(encoding="utf-8").splitlines() for f in files})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._index_to_token == other._index_to_token

    def __repr__(self) -> str:
        sizes = ", ".join(f"{ns}: {len(tokens)}" for ns, tokens in self._index_to_token.items())
        return f"Vocabulary({sizes})"
