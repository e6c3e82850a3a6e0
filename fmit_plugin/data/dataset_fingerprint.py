"""
What a data file is, so that two people can see at a glance whether they trained on or scored the
same data: its SHA-256 and size, its tweet / token / entity counts, entities and tags per label, and
the known dataset version it matches (`KNOWN_VERSIONS`). Two copies of "Twitter-2015" circulate
whose counts differ (the UMT release in `../shared/data`, and the counts the papers' Table 1
gives): the counts tell them apart even where the other file's hash is not known.
"""
import hashlib
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.span_utils import bio_tags_to_spans


@dataclass(frozen=True)
class KnownDatasetVersion:
    """
    One released version of a data file.

    # Parameters

    name : `str`
        What it is, e.g. "Twitter-2015 test (UMT release)".
    tweets : `int`
        Its number of tweets.
    entities_by_type : `dict[str, int]`
        Its entities per type (BIO spans; OTHER counted as MISC, as the readers map it by default).
    sha256 : `str`, optional
        The file's SHA-256, where known; without it the version is matched by its counts only.
    tokens : `int`, optional
        Its number of tokens, where known.
    source : `str`
        Where the figures come from.
    """

    name: str
    tweets: int
    entities_by_type: dict[str, int]
    sha256: Optional[str] = None
    tokens: Optional[int] = None
    source: str = ""

    def same_counts(self, fingerprint: "DatasetFingerprint") -> bool:
        return (
            fingerprint.tweets == self.tweets
            and _as_misc(fingerprint.entities_by_type) == self.entities_by_type
            and (self.tokens is None or fingerprint.tokens == self.tokens)
        )


_UMT = "the UMT release (Yu et al., 2020) as ../shared/data holds it, hashed and counted by fmit-plugin"
_TABLE_1 = "Table 1 of the FMIT paper (Lu et al., 2022), which repeats UMT's statistics; file hash not known"

# Hashes and counts of ../shared/data measured with `fingerprint_dataset` (default twitter_mner reader).
# The Twitter-2015 files hold more entities than the papers' Table 1 states (6352 against 6176 in
# train): a file with the Table 1 counts is another version, matched by its counts.
KNOWN_VERSIONS: list[KnownDatasetVersion] = [
    KnownDatasetVersion("Twitter-2015 train (UMT release)", 4000, {"LOC": 2135, "MISC": 975, "ORG": 957, "PER": 2285},
                        "a6246e37aa1c8acd738747fa8257e01775f2a1cc0d4f36f82f9d41d6246ad6fa", 64439, _UMT),
    KnownDatasetVersion("Twitter-2015 validation (UMT release)", 1000,
                        {"LOC": 543, "MISC": 233, "ORG": 251, "PER": 567},
                        "9dcc7f9df7331de3c9cdf67a3450e041c41c6254b5e43925c576e2dfaaabe2ad", 16178, _UMT),
    KnownDatasetVersion("Twitter-2015 test (UMT release)", 3257, {"LOC": 1720, "MISC": 754, "ORG": 860, "PER": 1873},
                        "edb2665b89bfe58bca06a2c10b9b31cbfa95456135b6a4cbf55c872e48d9b8f9", 52822, _UMT),
    KnownDatasetVersion("Twitter-2017 train (UMT release)", 3373, {"LOC": 731, "MISC": 701, "ORG": 1674, "PER": 2943},
                        "801e149e8635b19d66b4ec1212c329be340ada501b35c5fa55455fb6f53633be", 53007, _UMT),
    KnownDatasetVersion("Twitter-2017 validation (UMT release)", 723, {"LOC": 173, "MISC": 150, "ORG": 375, "PER": 626},
                        "41b5db90cb32059c14c2c3ccd50845fb77f1e3d3e4f7d0c210a61bc507d8a73e", 11309, _UMT),
    # Not in ../shared/data: known by the paper's counts only (its train / validation counts are the files' above).
    KnownDatasetVersion("Twitter-2017 test (UMT release)", 723, {"LOC": 178, "MISC": 157, "ORG": 395, "PER": 621},
                        source=_TABLE_1),
    KnownDatasetVersion("Twitter-2015 train (paper Table 1 counts)", 4000,
                        {"LOC": 2091, "MISC": 940, "ORG": 928, "PER": 2217}, source=_TABLE_1),
    KnownDatasetVersion("Twitter-2015 validation (paper Table 1 counts)", 1000,
                        {"LOC": 522, "MISC": 225, "ORG": 247, "PER": 552}, source=_TABLE_1),
    KnownDatasetVersion("Twitter-2015 test (paper Table 1 counts)", 3257,
                        {"LOC": 1697, "MISC": 726, "ORG": 839, "PER": 1816}, source=_TABLE_1),
]


@dataclass
class DatasetFingerprint:
    """
    A data file's identity: `sha256` and `bytes` of the file; `tweets`, `tokens`, `entities`,
    `entities_by_type` and `tags` (per label) of the instances a reader made of it (`None` where it
    was not read); `known_version`: the `KnownDatasetVersion` it matches, as
    `{"name", "match", "source"}` with `match` "sha256" (the very file) or "counts" (same tweets
    and entities, other bytes or hash not known), or `None`.
    """

    path: str
    sha256: str
    bytes: int
    tweets: Optional[int] = None
    tokens: Optional[int] = None
    entities: Optional[int] = None
    entities_by_type: dict[str, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    known_version: Optional[dict[str, str]] = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line: file, hash, counts and the known version."""
        text = f"{self.path}: SHA-256 {self.sha256}, {self.bytes} bytes"
        if self.tweets is not None:
            types = ", ".join(f"{name} {count}" for name, count in self.entities_by_type.items())
            text += f"; {self.tweets} tweets, {self.tokens} tokens, {self.entities} entities ({types})"
        return f"{text}; {describe_known_version(self.known_version)}"


def describe_known_version(known_version: Optional[dict[str, str]]) -> str:
    if not known_version:
        return "no known dataset version"
    how = ("the very file (SHA-256 match)" if known_version["match"] == "sha256"
           else "same tweet and entity counts (not the same bytes as far as known)")
    return f"{known_version['name']}: {how}"


def file_sha256(path: Union[str, os.PathLike]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_dataset(
    path: Union[str, os.PathLike],
    instances: Optional[Sequence[TaggingInstance]] = None,
    known_versions: Optional[Sequence[KnownDatasetVersion]] = None,
) -> DatasetFingerprint:
    """The fingerprint of the file at `path`, counted on `instances` (what a reader made of it:
    counts are left out without them). Tags are counted as the reader gave them, entities as BIO
    spans (conlleval's reading)."""
    path = Path(path)
    fingerprint = DatasetFingerprint(str(path), file_sha256(path), path.stat().st_size)
    if instances is not None:
        tags: Counter = Counter(tag for instance in instances for tag in instance.tags or [])
        entities: Counter = Counter(
            span[0] for instance in instances if instance.tags for span in bio_tags_to_spans(instance.tags)
        )
        fingerprint.tweets = len(instances)
        fingerprint.tokens = sum(len(instance) for instance in instances)
        fingerprint.entities = sum(entities.values())
        fingerprint.entities_by_type = dict(sorted(entities.items()))
        fingerprint.tags = dict(sorted(tags.items()))
    fingerprint.known_version = match_known_version(
        fingerprint, KNOWN_VERSIONS if known_versions is None else known_versions
    )
    return fingerprint


def match_known_version(
    fingerprint: DatasetFingerprint, known_versions: Sequence[KnownDatasetVersion]
) -> Optional[dict[str, str]]:
    """The version whose hash is the file's; else the first whose counts are its counts; else `None`."""
    for version in known_versions:
        if version.sha256 == fingerprint.sha256:
            return {"name": version.name, "match": "sha256", "source": version.source}
    if fingerprint.tweets is None:
        return None
    for version in known_versions:
        if version.same_counts(fingerprint):
            return {"name": version.name, "match": "counts", "source": version.source}
    return None


def _as_misc(entities_by_type: dict[str, int]) -> dict[str, int]:
    merged: Counter = Counter()
    for name, count in entities_by_type.items():
        merged["MISC" if name == "OTHER" else name] += count
    return dict(merged)
